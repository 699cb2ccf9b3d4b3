"""Guarantee 3: a Dask worker process SIGKILLed in the middle of exploration or labelling.

The nanny restarts it, the scheduler reschedules its task, the step completes, and the
result holds no duplicated frame: a labelled frame goes to the label cache before its task
returns, and a trajectory continues from its last streamed checkpoint.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest
from ase.build import bulk
from helpers import Fault, counting_wrapper, pw_calls, record, wait_for
from requires import needs

from pfd.config import ClusterSpec, QESpec, parse_config
from pfd.frames import frame_hash
from pfd.label.cache import label_frames
from pfd.label.qe import QELabeller
from pfd.model_cache import upload_model
from pfd.run_store import make_context
from pfd.steps import explore
from pfd.store import LocalStore
from tasks.cluster import dask_cluster, dask_map

pytestmark = [pytest.mark.slow,
              needs(shutil.which("pw.x") is not None, "pw.x not installed")]


def _cmdline(proc: psutil.Process) -> str:
    """A process's command line, or "" once it has exited or is a zombie (a child can end
    between listing and reading: a race the test must not fail on)."""
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def _in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as err:  # noqa: BLE001 - re-raised by the test
            box["error"] = err

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def _worker_pids(client: Any) -> dict[str, int]:
    return {addr: int(pid) for addr, pid in client.run(lambda: __import__("os").getpid()).items()}


def test_worker_killed_during_labelling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PFD_TEST_PW_LOG", str(tmp_path / "pw-calls.log"))
    cmd = counting_wrapper(tmp_path, "sleep 1")
    lab = QELabeller(QESpec(pseudopotentials={"Si": "Si.pbe-rrkj.UPF"}, ecutwfc_Ry=12,
                            kspacing_invA=0.8, conv_thr_Ry=1e-6, command=cmd),
                     elements=("Si",))
    frames = []
    for seed in range(6):
        a = bulk("Si", "diamond", a=5.43)
        a.rattle(0.05, seed=100 + seed)
        frames.append(a)
    store = LocalStore(tmp_path / "store")
    with dask_cluster(ClusterSpec(n_workers=2)) as client:
        pids = _worker_pids(client)
        t, box = _in_thread(lambda: label_frames(lab, frames, store.url, dask_map,
                                                 scratch=str(tmp_path / "scratch")))
        # wait until a worker is inside pw.x, then kill that worker process
        victim: list[psutil.Process] = []

        def engine_running() -> bool:
            if not pw_calls(tmp_path):  # the wrapper has logged its call: inside the engine
                return False
            for pid in pids.values():
                kids = psutil.Process(pid).children(recursive=True)
                if any("pw" in _cmdline(k) for k in kids):
                    victim[:] = [psutil.Process(pid), *kids]
                    return True
            return False

        wait_for(engine_running, None, "a pw.x run on a worker", timeout=120)
        worker, engine = victim[0], victim[1:]
        worker.kill()  # the worker only: its engine must not outlive it (the guard)
        _, alive = psutil.wait_procs(engine, timeout=10)
        assert not alive, f"the engine outlived its worker: {[_cmdline(p) for p in alive]}"
        killed_calls = len(pw_calls(tmp_path))
        t.join(timeout=300)
        new_pids = _worker_pids(client)
    assert "error" not in box, box.get("error")
    res = box["result"]
    assert len(res.labelled) == 6 and not res.failed
    hashes = [frame_hash(a) for a in res.labelled]
    assert hashes == [frame_hash(a) for a in frames] and len(set(hashes)) == 6
    stored = [k for k in store.list("labels/") if k.endswith(".extxyz")]
    assert len(stored) == 6
    assert set(new_pids.values()) != set(pids.values())  # a worker really was replaced
    calls = pw_calls(tmp_path)
    # only the frame the dead worker held may run twice; every other frame ran once
    twice = {h for h in calls if calls.count(h) > 1}
    assert len(twice) <= 1 and len(calls) <= 7
    assert killed_calls >= 1
    record(Fault("test_worker_killed_during_labelling",
                 "SIGKILL of a Dask worker inside pw.x (its pw.x dies with it)",
                 runs_completed=1, frames_lost=6 - len(res.labelled),
                 dft_repeated=0, outcome="task rescheduled; 6/6 frames, no duplicate"))


def test_worker_killed_during_exploration(tmp_path: Path) -> None:
    from pfd.models.sevennet import save_foundation

    raw = {"run_id": "dask-kill", "store": str(tmp_path / "store"),
           "workdir": str(tmp_path / "work"),
           "structures": {"d": {"build": {"element": "Si", "crystal": "diamond", "a_A": 5.43,
                                          "cubic": False}}},
           "init": {"structures": ["d"]},
           "labeller": {"qe": {"pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"}}},
           "stages": [{"name": "s", "groups": [{"structures": ["d"],
                                                "temperatures_K": [300, 600, 900],
                                                "steps": 60, "sample_every": 5,
                                                "samples_per_part": 2}]}]}
    cfg = parse_config(raw)
    ctx = make_context(cfg)
    model = save_foundation(tmp_path / "foundation", type_map=["Si"])
    upload_model(ctx.store, ctx.key("models", "foundation"), model)
    prefix = ctx.key("explore")
    store = ctx.store
    with dask_cluster(ClusterSpec(n_workers=2)) as client:
        pids = _worker_pids(client)
        t, box = _in_thread(lambda: explore(ctx, ctx.key("models", "foundation"),
                                            list(cfg.stages[0].groups), prefix, dask_map))
        holder: dict[str, Any] = {}

        def mid_trajectory() -> bool:
            keys = store.list(prefix + "/")
            cks = [k for k in keys if k.endswith(".checkpoint.json")]
            if not cks:
                return False
            holder["checkpoint"] = cks[0]
            return True

        wait_for(mid_trajectory, None, "a trajectory checkpoint", timeout=300)
        # kill every worker running a task: whichever holds that trajectory dies
        busy = [addr for addr, keys in client.processing().items() if keys]
        for addr in busy:
            proc = psutil.Process(pids[addr])
            for p in [proc, *proc.children(recursive=True)]:
                p.kill()
        t.join(timeout=600)
    assert "error" not in box, box.get("error")
    res = box["result"]
    assert res["trajectories"] == 3 and res["frames"] == 3 * 12
    frames = [a for k in res["keys"] for a in store.get_frames(k)]
    hashes = [frame_hash(a) for a in frames]
    assert len(hashes) == 36 and len(set(hashes)) == 36  # nothing duplicated or lost
    # the killed trajectory kept the parts it had streamed and continued after them
    tid = holder["checkpoint"].rsplit("/", 1)[1].removesuffix(".checkpoint.json")
    rec = store.get_json(f"{prefix}/{tid}.json")
    assert len(rec["parts"]) == 6 and rec["n_frames"] == 12
    assert not [k for k in store.list(prefix + "/") if k.endswith(".checkpoint.json")]
    record(Fault("test_worker_killed_during_exploration",
                 f"SIGKILL of {len(busy)} Dask worker(s) mid-trajectory", injected=len(busy),
                 runs_completed=1, frames_lost=36 - len(set(hashes)),
                 outcome="tasks rescheduled; trajectories continued; 36/36 frames"))
