"""Use the mypyc-compiled sidecar modules when they match the sources, else pure Python.

`make native` (scripts/build_native.py) compiles the hot-path modules into build/native/ with a
manifest of the source hashes they were built from. `install()` (run by sidecar/__init__.py,
before any other sidecar module is imported) serves those modules from there only when every
listed source is unchanged and the interpreter matches; otherwise everything stays pure Python,
so an edited file can never run as stale compiled code. MESHLENS_PURE_PYTHON=1 forces pure
Python (the test suite runs in both modes). This module itself is never compiled.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

__all__ = [
    "BUILD_DIR",
    "C_MODULES",
    "MODULES",
    "SOURCES",
    "NativeFinder",
    "install",
    "mode",
    "mypyc_attr",
    "source_hashes",
]

if TYPE_CHECKING:
    from mypy_extensions import mypyc_attr  # class directives for mypyc, e.g. native_class
else:
    try:  # mypy_extensions comes with mypy; a plain-Python install may lack it
        from mypy_extensions import mypyc_attr
    except ImportError:

        def mypyc_attr(*_args: Any, **_kwargs: Any) -> Any:
            return lambda cls: cls


ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = ROOT / "build" / "native"
GROUP = "sidecar_native"  # mypyc's shared library is the module `sidecar_native__mypyc`

# The modules on the request path, compiled by scripts/build_native.py (paths from ROOT).
# In them, module-level constants read per request are `Final`: compiled, any other global is a
# dict lookup on each use (a Final one is a C static, or inlined when it is a str/int literal).
MODULES: tuple[str, ...] = (
    "sidecar/http.py",
    "sidecar/stack.py",
    "sidecar/capture.py",
    "sidecar/discovery.py",
    "sidecar/codec.py",
    "sidecar/protocols.py",
    "sidecar/upstream.py",
    "sidecar/layers/balance.py",
    "sidecar/layers/breaker.py",
    "sidecar/layers/budget.py",
    "sidecar/layers/fallback.py",
    "sidecar/layers/fault.py",
    "sidecar/layers/fused.py",
    "sidecar/layers/grpc.py",
    "sidecar/layers/outlier.py",
    "sidecar/layers/proxy_errors.py",
    "sidecar/layers/ratelimit.py",
    "sidecar/layers/retry.py",
    "sidecar/layers/routing.py",
    "sidecar/layers/telemetry.py",
    "sidecar/layers/timeout.py",
    "sidecar/telemetry/accesslog.py",
    "sidecar/telemetry/context.py",
    "sidecar/telemetry/exchange.py",
    "sidecar/telemetry/exporter.py",
    "sidecar/telemetry/grpc_metrics.py",
    "sidecar/telemetry/istio.py",
    "sidecar/telemetry/metrics.py",
    "sidecar/telemetry/otel_metrics.py",
    "sidecar/telemetry/otlp.py",
    "sidecar/telemetry/recorder.py",
    "sidecar/telemetry/semconv.py",
    "sidecar/telemetry/spans.py",
    "sidecar/telemetry/transport.py",
)
# C modules built with them (sidecar/_h1fast.c: common HTTP/1.1 messages in one call), served
# the same way: only in compiled mode, and only while fresh. Both kinds together: SOURCES.
C_MODULES: tuple[str, ...] = ("sidecar/_h1fast.c",)
SOURCES: tuple[str, ...] = MODULES + C_MODULES

_mode = "pure"


def mode() -> str:
    """ "compiled", or "pure" with the reason (logged once by the sidecar at start-up)."""
    return _mode


def module_name(path: str) -> str:
    return path.removesuffix(".py").removesuffix(".c").replace("/", ".")


def source_hashes(paths: Sequence[str] = SOURCES, root: Path = ROOT) -> dict[str, str]:
    """sha256 of each module's source, keyed by module name."""
    return {module_name(p): hashlib.sha256((root / p).read_bytes()).hexdigest() for p in paths}


def interpreter_tag() -> str:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return f"{sys.implementation.cache_tag}{suffix}"


class NativeFinder(importlib.abc.MetaPathFinder):
    """Serves the compiled extension of each listed module from the build directory."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def _check(build_dir: Path) -> tuple[dict[str, Path] | None, str]:
    manifest_path = build_dir / "manifest.json"
    if not manifest_path.is_file():
        return None, "pure (not compiled: make native)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return None, "pure (unreadable build/native/manifest.json)"
    if manifest.get("interpreter") != interpreter_tag():
        return None, "pure (compiled for another Python)"
    modules: dict[str, str] = manifest.get("modules", {})
    try:
        current = source_hashes([p for p in SOURCES if module_name(p) in modules])
    except OSError:
        return None, "pure (sources missing)"
    if set(modules) != {module_name(p) for p in SOURCES} or current != modules:
        return None, "pure (compiled modules are stale: make native)"
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    files = {name: build_dir / (name.replace(".", "/") + suffix) for name in modules}
    files[f"{GROUP}__mypyc"] = build_dir / f"{GROUP}__mypyc{suffix}"
    if not all(f.is_file() for f in files.values()):
        return None, "pure (incomplete build/native)"
    return files, "compiled"


def install(build_dir: Path = BUILD_DIR) -> str:
    """Put the finder for fresh compiled modules first on sys.meta_path; return the mode."""
    global _mode
    if os.environ.get("MESHLENS_PURE_PYTHON", "") not in ("", "0"):
        _mode = "pure (MESHLENS_PURE_PYTHON)"
        return _mode
    if any(isinstance(f, NativeFinder) for f in sys.meta_path):
        return _mode
    files, _mode = _check(build_dir)
    if files is not None:
        sys.meta_path.insert(0, NativeFinder(files))
    return _mode
