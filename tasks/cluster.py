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
from typing import Any

from pfd.config import ClusterSpec

_client: Any = None

# One thread per worker process: on 2 cores, oversubscribed BLAS/torch threads made
# DeePMD 12x and CP2K 5x slower (DESIGN.md, measured).
_WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "DP_INTRA_OP_PARALLELISM_THREADS": "1", "DP_INTER_OP_PARALLELISM_THREADS": "1"}


@contextmanager
def dask_cluster(spec: ClusterSpec) -> Iterator[Any]:
    global _client
    from dask.distributed import Client, LocalCluster

    if spec.address:
        client = Client(spec.address)
        cluster = None
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


def dask_map(fn: Callable[..., Any], *iterables: Iterable[Any]) -> list[Any]:
    """``map`` over the active Dask cluster (serial when none is active), order preserved."""
    if _client is None:
        return list(map(fn, *iterables))
    futures = _client.map(fn, *iterables, pure=False)
    return list(_client.gather(futures))
