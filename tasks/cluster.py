"""The Dask cluster that exploration and labelling fan out over.

A client inside tasks (not Prefect's DaskTaskRunner): the flow's own tasks stay cheap
and sequential (the PFD loop is inherently sequential), while the embarrassingly
parallel inner work — trajectories, DFT frames — goes to Dask as plain functions from
``pfd.steps``. The active client is process-global so tasks need no unpicklable
parameter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pfd.config import ClusterSpec, JobQueueSpec
from pfd.models.deepmd_run import thread_env as dp_thread_env

_client: Any = None

# One thread per worker process (why: pfd.threads); deepmd's own variables included.
_WORKER_ENV = {k: v for k, v in dp_thread_env(1).items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def build_jobqueue_cluster(spec: JobQueueSpec) -> Any:
    """A SLURMCluster/PBSCluster for ``spec``, with no job submitted yet.

    Its scheduler runs in this process; jobs start only on ``scale``. Returned unscaled
    so ``cluster.job_script()`` can be inspected (and tested) without a batch system.
    BLAS/OpenMP are pinned to one thread in every job, as on the LocalCluster.
    """
    import sys

    from dask_jobqueue import PBSCluster, SLURMCluster

    cls = {"slurm": SLURMCluster, "pbs": PBSCluster}[spec.kind]
    prologue = [f"export {k}={v}" for k, v in _WORKER_ENV.items()]
    return cls(
        cores=spec.cores, memory=spec.memory, processes=spec.processes or spec.cores,
        walltime=spec.walltime, queue=spec.queue, account=spec.account,
        job_extra_directives=list(spec.job_extra_directives),
        job_script_prologue=prologue + list(spec.job_script_prologue),
        interface=spec.interface, local_directory=spec.local_directory,
        log_directory=spec.log_directory, python=spec.python or sys.executable,
        job_name="pfd-worker", scheduler_options={"dashboard_address": ":0"},
        silence_logs=logging.WARNING)


@contextmanager
def dask_cluster(spec: ClusterSpec) -> Iterator[Any]:
    global _client
    from dask.distributed import Client, LocalCluster

    if spec.address:
        client = Client(spec.address)
        cluster = None
    elif spec.jobqueue is not None:
        cluster = build_jobqueue_cluster(spec.jobqueue)
        cluster.scale(jobs=spec.jobqueue.n_jobs)
        client = Client(cluster)
    else:
        cluster = LocalCluster(n_workers=spec.n_workers, threads_per_worker=spec.threads_per_worker,
                               processes=True, dashboard_address=None,
                               silence_logs=logging.WARNING, env=_WORKER_ENV)
        client = Client(cluster)
    previous, _client = _client, client
    try:
        yield client
    finally:
        _client = previous
        client.close()
        if cluster is not None:
            cluster.close()


Progress = Callable[[int, int], None]
_progress: ContextVar[Progress | None] = ContextVar("pfd_dask_progress", default=None)


@contextmanager
def reporting_progress(report: Progress) -> Iterator[None]:
    """Have every ``dask_map`` inside the block call ``report(done, total)`` as items finish."""
    token = _progress.set(report)
    try:
        yield
    finally:
        _progress.reset(token)


def dask_map(fn: Callable[..., Any], *iterables: Iterable[Any]) -> list[Any]:
    """``map`` over the active Dask cluster (serial when none is active), order preserved."""
    report = _progress.get()
    if _client is None:
        args = list(zip(*iterables, strict=True))
        out = []
        for i, a in enumerate(args):
            out.append(fn(*a))
            if report:
                report(i + 1, len(args))
        return out
    futures = _client.map(fn, *iterables, pure=False)
    if report is None:
        return list(_client.gather(futures))
    from dask.distributed import as_completed

    for done, _ in enumerate(as_completed(futures), start=1):
        report(done, len(futures))
    return list(_client.gather(futures))
