"""Batch-system workers: the dask-jobqueue cluster a ``cluster.jobqueue`` block asks for,
and the check that the batch system accepts its job before a run depends on it.

One module owns what a worker job is (resources, thread pinning, log place, lifetime), so
the job ``pfd check`` tests with ``sbatch --test-only`` is the job ``pfd run`` submits.

Why workers get a ``--lifetime`` shorter than the walltime: a worker that retires itself
hands its queued work back to the scheduler before SLURM kills the job, and the cluster
(adaptive with a fixed size, see :func:`start_jobqueue_cluster`) submits a replacement.
A job killed anyway (``scancel``, node failure, walltime) loses only the tasks it was
running; Dask runs them again elsewhere and finished DFT labels come from the label cache.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pfd.config import ConfigError, JobQueueSpec
from pfd.models.deepmd_run import thread_env

#: every worker process is single-threaded (why: pfd.threads), deepmd's own variables included
WORKER_ENV = {k: v for k, v in thread_env(1).items() if k != "TF_CPP_MIN_LOG_LEVEL"}

#: a worker retires this long before its job's walltime (at most a fifth of the walltime)
RETIRE_BEFORE_S = 300.0

_SUBMIT = {"slurm": "sbatch", "pbs": "qsub"}


def walltime_s(walltime: str) -> float:
    """Seconds of a ``[D-]HH:MM:SS`` walltime (validated by :class:`JobQueueSpec`)."""
    days, _, hms = walltime.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return (int(days) if days else 0) * 86400 + h * 3600 + m * 60 + s


def worker_lifetime_s(walltime: str) -> float:
    """When a worker retires itself: before the batch system would kill its job."""
    wall = walltime_s(walltime)
    return max(wall - min(RETIRE_BEFORE_S, wall / 5), 1.0)


def log_directory(spec: JobQueueSpec, log_dir: Path | None) -> str | None:
    """Where the jobs' stdout/stderr go: the spec's ``log_directory``, else ``log_dir``."""
    return spec.log_directory or (str(log_dir) if log_dir is not None else None)


def build_jobqueue_cluster(spec: JobQueueSpec, log_dir: Path | None = None,
                           job_name: str = "pfd-worker",
                           env: dict[str, str] | None = None) -> Any:
    """A SLURMCluster/PBSCluster for ``spec``, with no job submitted yet: each job books
    ``cores`` CPUs and ``memory`` and runs ``processes`` single-task workers.

    Its scheduler runs in this process; jobs start only on ``scale``/``adapt``. Returned
    unscaled so ``cluster.job_script()`` can be inspected (and tested) without a batch
    system. Job logs go to ``spec.log_directory``, else ``log_dir`` (the run's workdir), so
    no ``slurm-<id>.out`` lands wherever ``pfd run`` was started; dask-jobqueue creates
    that directory when the cluster is built.
    """
    from dask.utils import parse_bytes
    from dask_jobqueue import PBSCluster, SLURMCluster

    prologue = [f"export {k}={v}" for k, v in {**WORKER_ENV, **(env or {})}.items()]
    logs = log_directory(spec, log_dir)
    lifetime = worker_lifetime_s(spec.walltime)
    processes = spec.processes or spec.cores
    # Each worker runs one task at a time (one Dask thread): the task (a DFT engine's ranks
    # × threads, a pinned torch MD) owns the worker's cores/processes CPUs. The job books all
    # ``cores`` from the batch system; Dask is told only one thread per process.
    if spec.kind == "slurm":
        cls, booking = SLURMCluster, {"job_cpu": spec.cores}
    else:
        mem = parse_bytes(spec.memory)
        cls, booking = PBSCluster, {
            "resource_spec": f"select=1:ncpus={spec.cores}:mem={-(-mem // 2**20)}MB"}
    return cls(
        cores=processes, memory=spec.memory, processes=processes, **booking,
        walltime=spec.walltime, queue=spec.queue, account=spec.account,
        job_extra_directives=list(spec.job_extra_directives),
        job_script_prologue=prologue + list(spec.job_script_prologue),
        interface=spec.interface, local_directory=spec.local_directory,
        log_directory=logs, python=spec.python or sys.executable,
        worker_extra_args=["--lifetime", f"{lifetime:.0f}s", "--lifetime-stagger",
                           f"{min(60.0, lifetime / 10):.0f}s"],
        job_name=job_name, scheduler_options={"dashboard_address": ":0"},
        silence_logs=logging.WARNING)


def start_jobqueue_cluster(spec: JobQueueSpec, log_dir: Path | None = None,
                           job_name: str = "pfd-worker",
                           env: dict[str, str] | None = None) -> Any:
    """The cluster with ``spec.n_jobs`` jobs kept alive: a job that ends (cancelled, failed,
    out of walltime, retired) is replaced. A plain ``scale`` never resubmits, so the
    cluster is adaptive between ``n_jobs`` and ``n_jobs``."""
    cluster = build_jobqueue_cluster(spec, log_dir, job_name, env)
    cluster.adapt(minimum_jobs=spec.n_jobs, maximum_jobs=spec.n_jobs)
    return cluster


# what a batch system's refusal says -> the setting to look at
_REFUSALS = (
    (re.compile(r"partition|queue", re.I), "queue"),
    (re.compile(r"account|association", re.I), "account"),
    (re.compile(r"time limit|walltime", re.I), "walltime"),
    (re.compile(r"memory|mem\b", re.I), "memory"),
    (re.compile(r"node configuration|cpu|core|task", re.I), "cores"),
)


def check_submittable(spec: JobQueueSpec, where: str = "cluster.jobqueue",
                      timeout_s: float = 30.0) -> None:
    """Raise :class:`ConfigError` naming the setting when the batch system would refuse the
    worker job (SLURM: ``sbatch --test-only``, which submits nothing); PBS has no dry run,
    so only the submit command is checked there."""
    submit = _SUBMIT[spec.kind]
    if shutil.which(submit) is None:
        raise ConfigError(f"{where}.kind: {spec.kind!r} needs {submit!r}, which is not on "
                          "this machine's PATH: run pfd where jobs can be submitted (the "
                          "cluster's login node), or remove the jobqueue block")
    if spec.kind != "slurm":
        return
    cluster = build_jobqueue_cluster(spec)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as fh:
        fh.write(script)
    try:
        out = subprocess.run([submit, "--test-only", fh.name], capture_output=True, text=True,
                             timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{where}: sbatch --test-only did not answer in {timeout_s:.0f} s: "
                          "is slurmctld reachable from here?") from None
    finally:
        Path(fh.name).unlink(missing_ok=True)
    if out.returncode == 0:
        return
    msg = " ".join(out.stderr.replace("sbatch: error:", "").split()) or f"exit {out.returncode}"
    field = next((f for rx, f in _REFUSALS if rx.search(msg)), None)
    if field is not None:
        value = getattr(spec, field)
        raise ConfigError(f"{where}.{field}: SLURM refuses a worker job with {field}="
                          f"{value!r}: {msg}")
    raise ConfigError(f"{where}: SLURM refuses the worker job: {msg}")
