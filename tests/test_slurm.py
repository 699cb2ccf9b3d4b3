"""Dask workers that are real SLURM jobs (tests/slurm.py): the work runs in them, DFT
labels go to jobs of their own with MPI ranks, and jobs that are cancelled or reach their
walltime cost no finished work — the replacement job picks it up.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from procs import dft_logged, dft_logging_wrapper
from requires import needs

from pfd import frames as fr
from pfd.config import ClusterSpec, JobQueueSpec, QESpec
from pfd.label.cache import label_frames
from pfd.label.qe import QELabeller
from pfd.store import LocalStore
from tasks.cluster import dask_cluster, dask_map, dft_map

TESTS = Path(__file__).resolve().parent
HAVE_PW = needs(shutil.which("pw.x") is not None, "pw.x not installed")
FAST = {"pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"}, "ecutwfc_Ry": 16.0,
        "kspacing_invA": 0.7, "conv_thr_Ry": 1e-8}


def _spec(**kw: object) -> JobQueueSpec:
    # the workers unpickle this module's functions: the prologue puts tests/ on their path,
    # as a user's prologue loads modules or activates the venv
    base: dict[str, object] = {"kind": "slurm", "cores": 1, "memory": "1GB", "queue": "debug",
                               "walltime": "00:10:00",
                               "job_script_prologue": [f"export PYTHONPATH={TESTS}"]}
    return JobQueueSpec(**{**base, **kw})  # type: ignore[arg-type]


def _job(i: int, sleep_s: float = 0.3) -> tuple[str | None, str | None]:
    time.sleep(sleep_s)
    return os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_CPUS_PER_TASK")


def _no_jobs_left(slurm: object, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not slurm.jobs("PD,CF,R"):  # type: ignore[attr-defined]
            return True
        time.sleep(0.3)
    return False


def test_work_runs_in_worker_jobs_whose_logs_stay_in_the_workdir(slurm_cluster, tmp_path):
    with dask_cluster(ClusterSpec(jobqueue=_spec(n_jobs=2)), workdir=tmp_path):
        out = dask_map(_job, range(8))
    jobs = {j for j, _ in out}
    assert None not in jobs and 1 <= len(jobs) <= 2, out
    logs = {p.name for p in (tmp_path / "jobqueue-logs").iterdir()}
    assert {f"pfd-worker-{j}.err" for j in jobs} <= logs, logs
    assert _no_jobs_left(slurm_cluster), "closing the cluster left worker jobs behind"


def test_dft_labels_go_to_jobs_of_their_own(slurm_cluster, tmp_path):
    spec = ClusterSpec(jobqueue=_spec(n_jobs=1), dft_jobqueue=_spec(cores=2, processes=1))
    with dask_cluster(spec, workdir=tmp_path):
        md, dft = dask_map(_job, range(3)), dft_map(_job, range(3))
    assert {c for _, c in md} == {"1"} and {c for _, c in dft} == {"2"}, (md, dft)
    assert not {j for j, _ in md} & {j for j, _ in dft}
    dft_logs = {p.name for p in (tmp_path / "jobqueue-logs" / "dft").iterdir()}
    assert {f"pfd-dft-{j}.err" for j, _ in dft} <= dft_logs, dft_logs
    assert _no_jobs_left(slurm_cluster)


def _si(seed: int, cubic: bool = False) -> object:
    a = bulk("Si", "diamond", a=5.43, cubic=cubic)
    a.rattle(0.05, seed=seed)
    return a


@HAVE_PW
def test_two_rank_label_in_a_job_equals_the_one_rank_label(slurm_cluster, tmp_path):
    """``mpi_ranks: 2`` inside a 2-core worker job: the same label as one rank (to SCF
    tolerance), the same label-cache entry (ranks are not physics)."""
    frame = _si(7)
    one = QELabeller(QESpec(**FAST), elements=("Si",))
    two = QELabeller(QESpec(**FAST, mpi_ranks=2), elements=("Si",))
    assert one.fingerprint() == two.fingerprint()
    first = LocalStore(tmp_path / "one-rank")
    ref = label_frames(one, [frame], first.url, scratch=str(tmp_path / "s1"))
    with dask_cluster(ClusterSpec(n_workers=1, dft_jobqueue=_spec(cores=2, processes=1)),
                      workdir=tmp_path):
        got = label_frames(two, [frame], LocalStore(tmp_path / "two-ranks").url, dft_map,
                           scratch=str(tmp_path / "s2"), keep_scratch=True)
        again = label_frames(two, [frame], first.url, dft_map, scratch=str(tmp_path / "s3"))
    assert ref.computed == 1 and got.computed == 1 and not got.failed, got.failed
    pw_out = next((tmp_path / "s2").rglob("pw.out")).read_text()
    assert re.search(r"Parallel version \(MPI\), running on\s+2 processors", pw_out)
    a, b = ref.labelled[0], got.labelled[0]
    assert abs(fr.energy(a) - fr.energy(b)) < 1e-4
    np.testing.assert_allclose(fr.forces(a), fr.forces(b), atol=1e-3)
    np.testing.assert_allclose(fr.stress(a), fr.stress(b), atol=1e-4)
    assert again.cached == 1 and again.computed == 0  # the 1-rank label served the 2-rank ask


@HAVE_PW
def test_cancelled_dft_job_costs_no_finished_frame(slurm_cluster, tmp_path):
    command, log = dft_logging_wrapper(tmp_path, "pw.x", "pw")
    lab = QELabeller(QESpec(**{**FAST, "conv_thr_Ry": 1e-6}, command=str(command)), ("Si",))
    frames = [_si(s, cubic=True) for s in range(8)]
    cancelled: list[str] = []
    known: list[str] = []

    def cancel_one_mid_frame() -> None:
        end = time.monotonic() + 300
        job = None
        while time.monotonic() < end and job is None:
            if dft_logged(log, "done"):  # after a first frame: a pw.x just started
                job = slurm_cluster.job_running("pw.x", started_within_s=1.0)
            time.sleep(0.05)
        if job is not None:
            cancelled.append(job)
            known.extend(slurm_cluster.history())  # every job submitted before the cancel
            slurm_cluster.cancel(job)

    with dask_cluster(ClusterSpec(n_workers=1, dft_jobqueue=_spec(n_jobs=2)),
                      workdir=tmp_path):
        killer = threading.Thread(target=cancel_one_mid_frame, daemon=True)
        killer.start()
        res = label_frames(lab, frames, LocalStore(tmp_path / "store").url, dft_map,
                           scratch=str(tmp_path / "scratch"))
        killer.join(timeout=5)
    assert cancelled, "no worker job was running to cancel"
    assert len(res.labelled) == 8 and not res.failed, res.failed
    done, started = dft_logged(log, "done"), dft_logged(log, "start")
    assert sorted(done) == sorted(set(done)) and len(done) == 8, "a finished frame ran twice"
    assert len(started) > len(done), "the cancelled job was not mid-frame: nothing was tested"
    after = slurm_cluster.history()
    assert max(map(int, after)) > max(map(int, known)), "no replacement job was submitted"


@pytest.mark.slow
def test_job_at_its_walltime_hands_its_work_on(slurm_cluster, tmp_path):
    """A 1-minute job: its worker retires before SLURM kills it, and a new job finishes."""
    t0 = time.monotonic()
    with dask_cluster(ClusterSpec(jobqueue=_spec(walltime="00:01:00", n_jobs=1)),
                      workdir=tmp_path):
        out = dask_map(_job, range(6), [10.0] * 6)
    jobs = [j for j, _ in out]
    assert len(set(jobs)) >= 2, jobs  # 60 s of work cannot fit a worker that retires at 48 s
    assert time.monotonic() - t0 < 240


def _config_with(tmp_path: Path, jobqueue: dict[str, object]) -> Path:
    import yaml
    from configs import base

    raw = base()
    raw["cluster"] = {"jobqueue": {"kind": "slurm", "cores": 1, "memory": "1GB", **jobqueue}}
    path = tmp_path / "pfd.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@HAVE_PW
def test_pfd_check_names_the_setting_slurm_refuses(slurm_cluster, tmp_path):
    from typer.testing import CliRunner

    from pfd.cli import app

    before = slurm_cluster.history()
    ok = CliRunner().invoke(app, ["check", str(_config_with(tmp_path, {"queue": "debug"}))])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(app, ["check", str(_config_with(tmp_path, {"queue": "gpu-big"}))])
    assert bad.exit_code == 2
    msg = bad.output.strip()
    assert len(msg.splitlines()) == 1 and "Traceback" not in msg, msg
    assert msg.startswith("cluster.jobqueue.queue: SLURM refuses a worker job with "
                          "queue='gpu-big'") and "partition" in msg, msg
    assert slurm_cluster.history() == before, "a test-only check submitted a job"
