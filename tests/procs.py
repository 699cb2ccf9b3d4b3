"""Process helpers shared by the kill/resume tests (a plain module: conftest files shadow
each other, so nothing is imported from them). ``kill_tree`` lives in
``benchmarks/_common.py`` (the benchmarks need it too) and is re-exported here."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_BENCHMARKS = str(Path(__file__).resolve().parents[1] / "benchmarks")
if _BENCHMARKS not in sys.path:
    sys.path.append(_BENCHMARKS)
from _common import kill_tree  # noqa: E402

__all__ = ["kill_tree", "wait_for"]


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
