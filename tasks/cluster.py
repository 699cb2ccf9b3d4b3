"""The Dask cluster that exploration and labelling fan out over.

A client inside tasks (not Prefect's DaskTaskRunner): the flow's own tasks stay cheap
and sequential (the PFD loop is inherently sequential), while the embarrassingly
parallel inner work — trajectories, DFT frames — goes to Dask as plain functions from
``pfd.steps``. The active client is process-global so tasks need no unpicklable
parameter.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pfd.config import ClusterSpec, JobQueueSpec
from pfd.device import device_env
from pfd.jobqueue import WORKER_ENV, start_jobqueue_cluster

#: the active clients: "default" runs everything, "dft" (if configured) the DFT labels
_clients: dict[str, Any] = {}


def _client_for(spec: ClusterSpec, jobqueue_logs: Path | None, stack: ExitStack) -> Any:
    from dask.distributed import Client, LocalCluster

    if spec.address:
        return stack.enter_context(Client(spec.address))
    if spec.jobqueue is not None:
        return _jobqueue_client(spec.jobqueue, jobqueue_logs, "pfd-worker", stack,
                                device_env(spec.device))
    cluster = stack.enter_context(LocalCluster(
        n_workers=spec.n_workers, threads_per_worker=spec.threads_per_worker,
        processes=True, dashboard_address=None, silence_logs=logging.WARNING,
        env={**WORKER_ENV, **device_env(spec.device)}))
    return stack.enter_context(Client(cluster))


def _jobqueue_client(spec: JobQueueSpec, logs: Path | None, job_name: str,
                     stack: ExitStack, env: dict[str, str] | None = None) -> Any:
    from dask.distributed import Client

    cluster = stack.enter_context(start_jobqueue_cluster(spec, logs, job_name, env))
    return stack.enter_context(Client(cluster))


@contextmanager
def dask_cluster(spec: ClusterSpec, workdir: Path | None = None) -> Iterator[Any]:
    """The run's Dask cluster(s) for the block; yields the default client.

    With ``cluster.dft_jobqueue`` the DFT labels go to a second cluster of batch jobs
    sized for the DFT engine (many cores, MPI ranks), and everything else stays on the
    first. Batch-job logs go under ``workdir/jobqueue-logs`` unless the spec says where.
    """
    global _clients
    # steps in this process (the flow's own) follow cluster.device too, for the block
    dev_env = device_env(spec.device)
    saved = {k: os.environ.get(k) for k in dev_env}
    os.environ.update(dev_env)
    logs = workdir / "jobqueue-logs" if workdir is not None else None
    previous = _clients
    with ExitStack() as stack:
        clients = {"default": _client_for(spec, logs, stack)}
        if spec.dft_jobqueue is not None:
            clients["dft"] = _jobqueue_client(
                spec.dft_jobqueue, logs / "dft" if logs is not None else None, "pfd-dft", stack)
        _clients = clients
        try:
            yield clients["default"]
        finally:
            _clients = previous
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


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
    return _map(_clients.get("default"), fn, *iterables)


def dft_map(fn: Callable[..., Any], *iterables: Iterable[Any]) -> list[Any]:
    """:func:`dask_map` for DFT labels: on the DFT cluster when the run has one."""
    return _map(_clients.get("dft", _clients.get("default")), fn, *iterables)


def _map(client: Any, fn: Callable[..., Any], *iterables: Iterable[Any]) -> list[Any]:
    report = _progress.get()
    if client is None:
        args = list(zip(*iterables, strict=True))
        out = []
        for i, a in enumerate(args):
            out.append(fn(*a))
            if report:
                report(i + 1, len(args))
        return out
    from dask.distributed import as_completed

    # Results come back as each item finishes and its future is released at once: a result
    # left in a worker's memory is lost with the worker (a batch job cancelled or retired
    # before its walltime) and Dask would run the finished item again.
    futures = client.map(fn, *iterables, pure=False)
    index = {f.key: i for i, f in enumerate(futures)}
    out: list[Any] = [None] * len(futures)
    for done, (future, result) in enumerate(as_completed(futures, with_results=True), start=1):
        out[index[future.key]] = result
        future.release()
        if report is not None:
            report(done, len(futures))
    return out
