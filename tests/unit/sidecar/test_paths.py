"""Path normalization: RFC 3986 dot segments and unreserved escapes, merged slashes, per mode."""

from __future__ import annotations

import pytest

from sidecar.paths import MODES, normalize_target


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        # RFC 3986 5.4 examples, as absolute paths
        ("/a/b/c/./../../g", "/a/g"),
        ("/b/c/./g", "/b/c/g"),
        ("/b/c/../g", "/b/g"),
        ("/b/c/..", "/b/"),
        ("/b/c/.", "/b/c/"),
        ("/..", "/"),
        ("/../../x", "/x"),
        ("/a/..", "/"),
        ("/./", "/"),
        ("/.hidden/..file", "/.hidden/..file"),  # (dots inside a name are no dot segment)
        # unreserved escapes decoded (then a dot segment they make is one), the rest kept
        ("/%61dmin", "/admin"),
        ("/%2e/admin", "/admin"),
        ("/public/%2E%2e/admin", "/admin"),
        ("/a%7e%5f%2D", "/a~_-"),
        ("/a%2fb", "/a%2Fb"),  # an escaped slash stays one (Envoy's KEEP_UNCHANGED)
        ("/a%zz", "/a%zz"),  # (not an escape: left as it is)
        ("/caf%C3%A9", "/caf%C3%A9"),
        # the query is never touched
        ("/a/../b?x=/../y&z=%61", "/b?x=/../y&z=%61"),
        ("/plain?q=1", "/plain?q=1"),
        ("*", "*"),
    ],
)
def test_base_normalization(target: str, expected: str) -> None:
    assert normalize_target(target, "base") == expected
    assert normalize_target(target, "merge_slashes") == expected


def test_merge_slashes_also_merges_runs_of_slashes_even_those_dot_removal_makes() -> None:
    assert normalize_target("//admin", "merge_slashes") == "/admin"
    assert normalize_target("/.//admin", "merge_slashes") == "/admin"
    assert normalize_target("/a/..//admin", "merge_slashes") == "/admin"
    assert normalize_target("/a///b//?x=//", "merge_slashes") == "/a/b/?x=//"
    assert normalize_target("//admin", "base") == "//admin"  # (base keeps them)


def test_none_leaves_every_target_as_it_came() -> None:
    for target in ("/a/../b", "/%61", "//x", "/a?b"):
        assert normalize_target(target, "none") == target
    assert MODES == ("none", "base", "merge_slashes")
