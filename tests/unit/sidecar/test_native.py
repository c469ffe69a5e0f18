"""sidecar/_native.py: compiled modules are used only when built from the current sources."""

from __future__ import annotations

import importlib.machinery
import json
import sys
from pathlib import Path

import pytest

import sidecar.codec
from sidecar import _native

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def _build_dir(tmp_path: Path, hashes: dict[str, str] | None = None, tag: str = "") -> Path:
    """A build directory shaped like scripts/build_native.py's output (empty extension files)."""
    out = tmp_path / "native"
    hashes = _native.source_hashes() if hashes is None else hashes
    for name in [*hashes, f"{_native.GROUP}__mypyc"]:
        path = out / (name.replace(".", "/") + SUFFIX)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    manifest = {"interpreter": tag or _native.interpreter_tag(), "modules": hashes}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_fresh_build_serves_every_listed_module_and_the_group_library(tmp_path: Path) -> None:
    files, mode = _native._check(_build_dir(tmp_path))
    assert mode == "compiled"
    assert files is not None
    finder = _native.NativeFinder(files)
    spec = finder.find_spec("sidecar.codec", None)
    assert spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)
    assert spec.origin == str(tmp_path / "native" / f"sidecar/codec{SUFFIX}")
    assert finder.find_spec(f"{_native.GROUP}__mypyc", None) is not None
    assert finder.find_spec("sidecar._h1fast", None) is not None  # the C module, built with them
    assert finder.find_spec("sidecar.config", None) is None  # not compiled: normal import


def test_an_edited_source_means_pure_python(tmp_path: Path) -> None:
    hashes = _native.source_hashes()
    hashes["sidecar.codec"] = "0" * 64  # built from another version of codec.py
    files, mode = _native._check(_build_dir(tmp_path, hashes))
    assert files is None
    assert mode == "pure (compiled modules are stale: make native)"


def test_an_edited_c_module_means_pure_python_too(tmp_path: Path) -> None:
    hashes = _native.source_hashes()
    assert "sidecar._h1fast" in hashes  # (sidecar/_h1fast.c)
    hashes["sidecar._h1fast"] = "0" * 64
    assert _native._check(_build_dir(tmp_path, hashes))[0] is None


def test_a_build_for_another_interpreter_or_module_list_is_not_used(tmp_path: Path) -> None:
    assert _native._check(_build_dir(tmp_path / "a", tag="cpython-399"))[1] == (
        "pure (compiled for another Python)"
    )
    fewer = dict(list(_native.source_hashes().items())[:-1])
    assert _native._check(_build_dir(tmp_path / "b", fewer))[0] is None


def test_missing_or_incomplete_builds_are_pure(tmp_path: Path) -> None:
    assert _native._check(tmp_path / "nothing") == (None, "pure (not compiled: make native)")
    out = _build_dir(tmp_path)
    (out / f"sidecar/stack{SUFFIX}").unlink()
    assert _native._check(out) == (None, "pure (incomplete build/native)")
    (out / "manifest.json").write_text("{not json")
    assert _native._check(out) == (None, "pure (unreadable build/native/manifest.json)")


def test_the_environment_forces_pure_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHLENS_PURE_PYTHON", "1")
    before = list(sys.meta_path)
    monkeypatch.setattr(_native, "_mode", _native.mode())  # restored after the test
    assert _native.install(_build_dir(tmp_path)) == "pure (MESHLENS_PURE_PYTHON)"
    assert sys.meta_path == before


def test_the_running_modules_match_the_reported_mode() -> None:
    compiled = _native.mode() == "compiled"
    assert sidecar.codec.__file__ is not None
    assert sidecar.codec.__file__.endswith(SUFFIX if compiled else ".py")
    assert any(isinstance(f, _native.NativeFinder) for f in sys.meta_path) == compiled
