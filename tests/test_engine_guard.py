"""A DFT engine ends with the worker that started it, and only its own process group is
killed on a timeout: real processes, a worker killed with -9, an engine that ignores
SIGTERM. (A killed Dask worker used to leave its pw.x computing, on the cores its retry
needed, until the frame was done.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pfd.label.custodian_run import kill_own_process, start_own_process


def _engine(tmp: Path, body: str) -> Path:
    """A script engine whose processes carry a marker in their environment."""
    path = tmp / "engine.sh"
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
    return path


def _marked(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if f"PFD_GUARD_TEST={marker}".encode() in (proc / "environ").read_bytes():
                    if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                        pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def _sleeping(marker: str) -> int:
    """How many of the marked processes are the engine's ``sleep`` children."""
    n = 0
    for pid in _marked(marker):
        try:
            n += Path(f"/proc/{pid}/comm").read_text().strip() == "sleep"
        except OSError:
            continue
    return n


def _started(marker: str, n_sleeps: int, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while _sleeping(marker) < n_sleeps:
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def _gone(marker: str, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not _marked(marker):
            return True
        time.sleep(0.05)
    return False


def test_a_killed_worker_takes_its_engine_and_the_engines_children_along(tmp_path):
    engine = _engine(tmp_path, "sleep 300 &\nsleep 301\n")
    marker = f"worker-{os.getpid()}"
    worker = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from pfd.label.custodian_run import start_own_process
        d = Path({str(tmp_path)!r})
        start_own_process([{str(engine)!r}], str(d), d / "out", d / "err",
                          {{"PFD_GUARD_TEST": {marker!r}}}, None)
        time.sleep(600)
        """)])
    try:
        assert _started(marker, 2), "the engine never started"
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        assert _gone(marker), f"engine processes outlived their worker: {_marked(marker)}"
    finally:
        worker.kill()
        for pid in _marked(marker):
            os.kill(pid, signal.SIGKILL)


def test_exit_status_and_output_pass_through_the_guard(tmp_path):
    engine = _engine(tmp_path, "echo computed; echo warned >&2; exit 3\n")
    proc = start_own_process([str(engine)], str(tmp_path), tmp_path / "out", tmp_path / "err",
                             {}, None)
    assert proc.wait(timeout=30) == 3
    assert (tmp_path / "out").read_text() == "computed\n"
    assert (tmp_path / "err").read_text() == "warned\n"


def test_an_engine_that_ignores_sigterm_is_still_killed(tmp_path):
    marker = f"stubborn-{os.getpid()}"
    engine = _engine(tmp_path, "trap '' TERM\nsleep 300 &\nwait\n")
    proc = start_own_process([str(engine)], str(tmp_path), tmp_path / "out", tmp_path / "err",
                             {"PFD_GUARD_TEST": marker}, None)
    assert _started(marker, 1), "the engine never started"
    t0 = time.monotonic()
    kill_own_process(proc, grace_s=1.0)
    assert _gone(marker, timeout=5), _marked(marker)
    assert time.monotonic() - t0 >= 0.9  # it was given its grace before SIGKILL


def test_a_missing_or_unrunnable_engine_fails_as_popen_would(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        start_own_process(["pfd-no-such-engine"], str(tmp_path), tmp_path / "o",
                          tmp_path / "e", {}, None)
    assert err.value.filename == "pfd-no-such-engine"
    plain = tmp_path / "engine.sh"
    plain.write_text("echo hi\n")
    with pytest.raises(PermissionError):
        start_own_process([str(plain)], str(tmp_path), tmp_path / "o", tmp_path / "e", {},
                          None)
