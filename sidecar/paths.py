"""Request path normalization, so that routes and authz rules match the path the app will serve.

An app (or the web server in front of it) resolves `/x/../admin`, `/./admin` and `/%61dmin` to
`/admin`, and nginx merges `//admin` into it too: a rule on `/admin*` that saw the raw path let
them through. As Envoy's `normalize_path` and `merge_slashes` (Istio's MERGE_SLASHES), the
sidecar rewrites the path of each request before its layers see it and forwards the rewritten
one, so what the rules judged is what the app gets:

- `base` (RFC 3986 6.2.2): percent-encodings of unreserved characters decoded (`%61` -> `a`,
  `%2E` -> `.`), the others' hex upper-cased (`%2f` -> `%2F`, kept encoded, as Envoy's default
  KEEP_UNCHANGED), then dot segments removed (5.2.4);
- `merge_slashes` (the default): `base`, then runs of `/` made one;
- `none`: the path as it came.

The query string is never touched; `*` (OPTIONS) is left as it is.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MODES", "normalize_target"]

MODES: Final = ("none", "base", "merge_slashes")

_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE: Final = re.compile(r"%([0-9A-Fa-f]{2})")
_SLASHES: Final = re.compile(r"/{2,}")


def _escape(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 on an absolute path (`/a/b/../c/./d` -> `/a/c/d`)."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == ".":
            if last:
                out.append("")  # (`/a/.` -> `/a/`)
        elif segment == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def normalize_target(target: str, mode: str) -> str:
    """`target` (origin-form) with its path normalized per `mode` (see the module docstring)."""
    if mode == "none" or not target.startswith("/"):
        return target
    end = target.find("?")
    path, query = (target, "") if end < 0 else (target[:end], target[end:])
    if "%" in path:
        path = _ESCAPE.sub(_escape, path)
    if mode == "merge_slashes" and "//" in path:
        path = _SLASHES.sub("/", path)
    if "/." in path:  # (after merging: no run of `/` is left for the removal to keep)
        path = _remove_dot_segments(path)
    return path + query
