"""Two flows on one run: the second refuses cleanly while the first holds it, and a run
whose holder was killed is taken over at once by the next `pfd run`.

Real CLI, real pw.x (the mini run); the first flow is killed once the second has been
refused, so the test costs one run's start-up, not a whole run.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from helpers import PFD, Fault, cli_env, kill_tree, mini_config, record, wait_for
from requires import needs

from pfd.run_lease import read_lease
from pfd.store import LocalStore

pytestmark = [pytest.mark.slow,
              needs(shutil.which("pw.x") is not None, "pw.x not installed")]


def _start(cfg: Path, tmp: Path, store: Path, log: str) -> subprocess.Popen[str]:
    return subprocess.Popen([PFD, "run", str(cfg), "--store", str(store), "--workdir",
                             str(tmp / "work")], cwd=tmp, env=cli_env(tmp),
                            stdout=open(tmp / log, "w"), stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


@pytest.mark.timeout(600)
def test_second_flow_refuses_and_a_dead_holder_is_taken_over(tmp_path: Path) -> None:
    cfg = mini_config(tmp_path, "pw.x")
    store = tmp_path / "store"
    st = LocalStore(store)
    first = _start(cfg, tmp_path, store, "first.log")
    try:
        wait_for(lambda: read_lease(st, "mini") is not None, first, "the first flow's lease",
                 timeout=300)
        holder = read_lease(st, "mini")
        assert holder is not None and holder["pid"] > 0
        t0 = time.perf_counter()
        second = subprocess.run([PFD, "run", str(cfg), "--store", str(store), "--workdir",
                                 str(tmp_path / "work")], cwd=tmp_path, env=cli_env(tmp_path),
                                capture_output=True, text=True, timeout=300)
        msg = second.stdout + second.stderr
        assert second.returncode == 3, msg
        assert "is already being run by" in msg and f"pid {holder['pid']}" in msg, msg
        assert "Traceback" not in msg
        assert time.perf_counter() - t0 < 120  # refused at start, not after work
        assert first.poll() is None  # the first flow was not disturbed
        assert read_lease(st, "mini")["token"] == holder["token"]
    finally:
        kill_tree(first)
    # the holder died without releasing: the next run on this host takes over at once
    third = _start(cfg, tmp_path, store, "third.log")
    try:
        wait_for(lambda: (read_lease(st, "mini") or {}).get("pid") not in (None, holder["pid"]),
                 third, "the third flow taking the lease over", timeout=300)
    finally:
        kill_tree(third)
    record(Fault("test_second_flow_refuses_and_a_dead_holder_is_taken_over",
                 "two flows on one run; holder killed", injected=2, runs_completed=0,
                 outcome="second refused with exit 3; killed holder's lease taken over"))
