"""Compile the sidecar's hot-path modules with mypyc into build/native/ (used when fresh).

    python scripts/build_native.py        # `make native`; make test/demo/bench depend on it

The module list is sidecar/_native.py's MODULES, with its C_MODULES built alongside. Output goes
to build/native/ with a manifest of the source hashes; sidecar/_native.py serves the compiled
modules only while they match, so a later edit falls back to pure Python until the next build.
When compilation is not possible (no mypyc, no C compiler or Python headers, a mypyc error) this
prints one line and exits 0: the sidecar then runs as pure Python, the same code, slower.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load_native() -> object:
    """sidecar/_native.py without importing the sidecar package (which would use the build)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_meshlens_native", ROOT / "sidecar/_native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def build(verbose: bool = False) -> str:
    """Build under an exclusive lock: two builds at once (make native from two shells) would
    otherwise share native-src/, native-obj/ and the output directory."""
    lock_path = ROOT / "build" / "native.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        with contextlib.suppress(ImportError, OSError):
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(verbose)


def _build(verbose: bool) -> str:
    native: object = _load_native()
    modules: tuple[str, ...] = native.MODULES  # type: ignore[attr-defined]
    c_modules: tuple[str, ...] = native.C_MODULES  # type: ignore[attr-defined]
    out: Path = native.BUILD_DIR  # type: ignore[attr-defined]
    manifest = out / "manifest.json"
    hashes = native.source_hashes(modules + c_modules)  # type: ignore[attr-defined]
    tag = native.interpreter_tag()  # type: ignore[attr-defined]
    if manifest.is_file():
        with contextlib.suppress(OSError, ValueError):
            old = json.loads(manifest.read_text())
            fresh = old.get("modules") == hashes and old.get("interpreter") == tag
            # (and complete: every compiled file there, as sidecar/_native.py checks)
            if fresh and native._check(out)[0] is not None:  # type: ignore[attr-defined]
                return "up to date"
    try:
        from mypyc.build import mypycify
        from setuptools import Distribution, Extension  # type: ignore[import-untyped]
    except ImportError as exc:
        return f"not compiled ({exc.name} missing): pure Python"
    tmp = out.with_name("native.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    log = io.StringIO()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            extensions = mypycify(
                list(modules),
                opt_level="3",
                group_name=native.GROUP,  # type: ignore[attr-defined]
                multi_file=True,
                target_dir=str(ROOT / "build" / "native-src"),
            )
            extensions += [
                Extension(native.module_name(path), [path], extra_compile_args=["-O2"])  # type: ignore[attr-defined]
                for path in c_modules
            ]
            dist = Distribution({"name": "meshlens-native", "ext_modules": extensions})
            cmd = dist.get_command_obj("build_ext")
            cmd.build_lib = str(tmp)
            cmd.build_temp = str(ROOT / "build" / "native-obj")
            cmd.parallel = os.cpu_count() or 1
            dist.run_command("build_ext")
    except (Exception, SystemExit) as exc:  # mypyc errors exit; any failure means pure Python
        if verbose or "--require" in sys.argv:
            print(log.getvalue(), file=sys.stderr)
        last = [line for line in log.getvalue().splitlines() if "error" in line.lower()]
        return f"not compiled ({(last[-1] if last else str(exc))[:200]}): pure Python"
    (tmp / "manifest.json").write_text(
        json.dumps({"interpreter": tag, "modules": hashes}, indent=1, sort_keys=True)
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return f"compiled {len(modules)} modules (and {len(c_modules)} C) into {out.relative_to(ROOT)}"


def main() -> int:
    """`--require` (what `make` passes when CI is set): a build that does not compile fails
    instead of leaving the sidecar to pure Python, so CI cannot pass on the fallback while the
    compiled path is broken (a name mypyc's C output cannot hold did exactly that once)."""
    start = time.monotonic()
    result = build(verbose="-v" in sys.argv)
    print(f"sidecar native build: {result} ({time.monotonic() - start:.0f} s)")
    if "--require" in sys.argv and result.startswith("not compiled"):
        print("sidecar native build: required (CI) but not compiled", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
