"""Process helpers shared by the kill/resume tests (a plain module: conftest files shadow
each other, so nothing is imported from them)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import psutil


def kill_tree(proc: subprocess.Popen[Any] | psutil.Process | int, timeout: float = 30) -> int:
    """SIGKILL a process and every descendant (Dask workers, pw.x in its own session, the
    flow run a worker spawned): what a node crash or an OOM kill of the whole job does.
    Returns how many died; 0 when the process was already gone."""
    pid = proc if isinstance(proc, int) else proc.pid
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return 0
    victims = [root, *root.children(recursive=True)]
    for p in victims:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=timeout)
    if isinstance(proc, subprocess.Popen):
        proc.wait()
    return len(victims)


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
