"""Process helpers shared by the kill/resume tests (a plain module: conftest files shadow
each other, so nothing is imported from them). ``kill_tree`` lives in
``benchmarks/_common.py`` (the benchmarks need it too) and is re-exported here."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

_BENCHMARKS = str(Path(__file__).resolve().parents[1] / "benchmarks")
if _BENCHMARKS not in sys.path:
    sys.path.append(_BENCHMARKS)
from _common import kill_tree  # noqa: E402

__all__ = ["kill_tree", "load_module", "run_quick_benchmark", "wait_for"]

ROOT = Path(__file__).resolve().parents[1]


def load_module(path: Path | str) -> ModuleType:
    """A script (a benchmark, a data generator) imported from its file, so its functions
    can be tested without running it; ``benchmarks/`` is on ``sys.path`` for its imports."""
    import importlib.util

    path = Path(path)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_quick_benchmark(name: str, out_dir: Path, timeout: float = 600) -> dict[str, Any]:
    """Run ``benchmarks/<name>.py --quick --out-dir out_dir`` as CI does; its result JSON."""
    out = subprocess.run([sys.executable, f"benchmarks/{name}.py", "--quick",
                          "--out-dir", str(out_dir)], cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    res = json.loads((out_dir / f"benchmarks/results/{name}_quick.json").read_text())
    assert res["machine"] and res["date"] and f"{name}.py --quick" in res["command"]
    return res


def wait_for(cond: Callable[[], bool], proc: subprocess.Popen[Any] | None, what: str,
             timeout: float = 300) -> None:
    """Poll ``cond`` until it holds; fail early when ``proc`` ends first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def dft_logging_wrapper(tmp: Path, program: str, name: str) -> tuple[Path, Path]:
    """A script that runs ``program "$@"`` and logs ``start <hash>`` before and
    ``done <hash>`` after each successful DFT run (hash of the ``pw.in`` it runs on), so a
    test tells a frame computed twice from one that was in flight when its job died.
    Without a ``pw.in`` (a version probe) it only runs ``program``."""
    log = tmp / f"{name}.log"
    script = tmp / f"{name}.sh"
    script.write_text(
        f"#!/usr/bin/env bash\n[ -f pw.in ] || exec {program} \"$@\"\n"
        f"h=$(sha256sum pw.in | cut -c1-16); echo start $h >> {log}\n"
        f"{program} \"$@\"; rc=$?; [ $rc = 0 ] && echo done $h >> {log}; exit $rc\n")
    script.chmod(0o755)
    return script, log


def dft_logged(log: Path, what: str) -> list[str]:
    """The input hashes ``dft_logging_wrapper`` logged as ``what`` (start / done), in order."""
    rows = [ln.split() for ln in log.read_text().splitlines()] if log.exists() else []
    return [h for w, h in rows if w == what]
