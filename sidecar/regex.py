"""Regular expressions from policies, matched in linear time (RE2), as Envoy's `safe_regex`.

A route's header match is a regex the operator writes and a value any client sends. Python's
`re` backtracks: `(a+)+$` takes 0.4 s for 24 characters and doubles with each one more, and
innocent-looking patterns such as `^(\\w+\\s?)*$` do the same. One request with such a header
held the sidecar's event loop (all its traffic) for as long as the match ran: a 64 KiB header
limit leaves room for years. RE2 (google-re2) guarantees time linear in the input; it has no
backreferences or lookaround, which a policy is refused for (Envoy and Istio refuse them too).
Imported only by a policy that has a regex (about 2.5 MB).
"""

from __future__ import annotations

from typing import Any

__all__ = ["RegexError", "compile_regex"]


class RegexError(ValueError):
    """A pattern RE2 does not take; the message says why."""


def compile_regex(pattern: str) -> Any:
    """`pattern` compiled by RE2 (its `fullmatch(text)` is None or a match), or RegexError."""
    import re2  # type: ignore[import-untyped]

    options = re2.Options()
    options.log_errors = False  # (else absl writes each refused pattern to stderr)
    try:
        return re2.compile(pattern, options=options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise RegexError(
            f"{reason} (RE2 syntax, as Envoy's safe_regex: no backreferences or lookaround)"
        ) from exc
