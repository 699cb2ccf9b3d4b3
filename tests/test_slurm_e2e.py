"""A whole PFD run at tiny scale whose MD and DFT run in Dask workers that are real SLURM
jobs (tests/slurm.py), with ``mpirun -np 2`` DFT in 2-core jobs of their own, while the
test cancels a DFT job mid-frame and an MD job mid-trajectory — as a cluster's users see
jobs die. The run must complete, compute no finished DFT frame twice, continue the
cancelled trajectory from its checkpoint, and a rerun must be a no-op.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from procs import dft_logged, dft_logging_wrapper
from requires import needs

from pfd.store import LocalStore

ROOT = Path(__file__).resolve().parents[1]
PFD = str(Path(sys.executable).parent / "pfd")

pytestmark = [pytest.mark.slow, needs(shutil.which("pw.x") is not None, "pw.x not installed")]


def _config(tmp: Path, mpirun: str) -> Path:
    cfg = yaml.safe_load((ROOT / "tests/data/tiny.yaml").read_text())
    cfg["run_id"] = "slurm"
    cold = cfg["stages"][0]
    # one checkpoint per sample, so a cancelled trajectory has something to continue from
    cold["groups"][0].update(steps=80, sample_every=10, samples_per_part=1)
    cfg["stages"] = [cold]
    cfg["distill"]["groups"] = [{"structures": ["diamond"], "temperatures_K": [500],
                                 "steps": 40, "sample_every": 5}]
    cfg["distill"]["student"]["steps"] = 100
    # no retrain round (tests/test_e2e.py runs them); the student's MD and the DFT audit
    # still go through the SLURM workers and the DFT job
    cfg["distill"]["refine"] = {"rounds": 0}
    cfg["validation"] = {"enabled": False}
    cfg["retention"] = {"enabled": False}
    cfg["labeller"]["qe"].update(mpi_ranks=2, mpirun=mpirun)
    job = {"kind": "slurm", "memory": "2GB", "queue": "debug", "walltime": "00:30:00"}
    cfg["cluster"] = {"jobqueue": {**job, "cores": 1, "n_jobs": 2},
                      "dft_jobqueue": {**job, "cores": 2, "processes": 1, "n_jobs": 1}}
    path = tmp / "slurm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def run(slurm_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("slurm-e2e")
    wrapper, log = dft_logging_wrapper(tmp, "mpirun", "mpirun")
    cfg = _config(tmp, f"{wrapper} -np {{ranks}}")
    store = tmp / "store"
    cmd = [PFD, "run", str(cfg), "--store", str(store), "--workdir", str(tmp / "work")]
    env = {**slurm_cluster.env(), "PREFECT_HOME": str(tmp / "prefect-home"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    cancelled: dict[str, str] = {}
    stop = threading.Event()

    def wait_for(cond: Any) -> bool:
        while not stop.is_set():
            if cond():
                return True
            time.sleep(0.1)
        return False

    def cancel(kind: str, job: str | None) -> None:
        if job is not None:
            cancelled[kind] = job
            slurm_cluster.cancel(job)

    def faults() -> None:
        # a DFT job mid-frame: after the first initial frame, the job of a pw.x just started
        found: list[str] = []

        def running_frame() -> bool:
            job = (slurm_cluster.job_running("pw.x", started_within_s=1.0)
                   if dft_logged(log, "done") else None)
            found[:] = [job] if job else []
            return bool(found)

        if wait_for(running_frame):
            cancel("dft", found[0])
        # an MD job mid-trajectory: once both trajectories have checkpointed
        explore = store / "runs/slurm/stage-01/iter-00"
        if wait_for(lambda: len(list(explore.rglob("*.checkpoint.json"))) >= 2):
            jobs = slurm_cluster.jobs(name="pfd-worker")
            cancel("md", jobs[0] if jobs else None)

    killer = threading.Thread(target=faults, daemon=True)
    killer.start()
    t0 = time.time()
    done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=1500)
    wall = time.time() - t0
    stop.set()
    killer.join(timeout=5)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    calls = dft_logged(log, "done")
    again = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    return {"tmp": tmp, "store": LocalStore(store), "log": log, "cancelled": cancelled,
            "calls": calls, "calls_after_rerun": dft_logged(log, "done"), "wall_s": wall,
            "jobs": slurm_cluster.history()}


def test_run_completes_through_cancelled_jobs(run: dict[str, Any]) -> None:
    st = run["store"]
    assert st.get_json("runs/slurm/run.json")["status"] == "completed"
    assert set(run["cancelled"]) == {"dft", "md"}, run["cancelled"]
    assert st.exists("runs/slurm/distill/student/frozen_model.pth")
    # replacements were submitted for the cancelled jobs (2 MD + 1 DFT at the start)
    assert len(run["jobs"]) >= 5, run["jobs"]
    logs = {p.name for p in (run["tmp"] / "work" / "slurm" / "jobqueue-logs").rglob("*.err")}
    assert any(n.startswith("pfd-dft-") for n in logs) and any(
        n.startswith("pfd-worker-") for n in logs), logs


def test_no_finished_dft_frame_is_computed_twice(run: dict[str, Any]) -> None:
    calls, started = run["calls"], dft_logged(run["log"], "start")
    assert len(calls) == len(set(calls)), "a finished DFT frame was computed again"
    assert len(started) > len(calls), "the DFT job was not cancelled mid-frame"
    n_init = len(run["store"].get_frames("runs/slurm/init/labelled.extxyz"))
    n_iter = len(run["store"].get_frames("runs/slurm/stage-01/iter-00/labelled.extxyz"))
    # plus the distillation's DFT audit of the student (2 frames of its own MD)
    n_audit = len(run["store"].get_frames("runs/slurm/distill/audit/dft.extxyz"))
    assert len(calls) == n_init + n_iter + n_audit == 3 + 2 + 2
    assert run["calls_after_rerun"] == calls, "rerunning a finished run called DFT again"


def test_cancelled_trajectory_continued_from_its_checkpoint(run: dict[str, Any]) -> None:
    st = run["store"]
    prefix = "runs/slurm/stage-01/iter-00/explore/"
    records = [st.get_json(k) for k in st.list(prefix)
               if k.endswith(".json") and not k.endswith(".checkpoint.json")]
    assert len(records) == 2, st.list(prefix)
    assert all(r["n_frames"] == 8 for r in records), records
    assert any(r.get("resumed_from_step") for r in records), records
