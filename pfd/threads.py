"""Thread pinning: the one place that says how many threads a step's libraries may use.

Why pin at all: the workflow runs several workers side by side, each on its share of
the cores. A library left alone starts one OpenMP/BLAS thread per core it sees, and
oversubscribed threads are badly counter-productive for the small models and cells
used here: on 2 busy cores, 2 threads made DeePMD 12x and CP2K 5x slower than 1
(see DESIGN.md). So every in-process step calls :func:`pin_threads`, and every engine
subprocess gets :func:`thread_env` in its environment.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_env(threads: int = 1) -> dict[str, str]:
    """Environment overrides pinning OpenMP, OpenBLAS and MKL to ``threads`` (at least 1),
    for a subprocess: ``env={**os.environ, **thread_env(n)}``."""
    n = str(max(1, int(threads)))
    return {var: n for var in THREAD_VARS}


def pin_threads(threads: int = 1, *, torch: bool | None = None, override: bool = True,
                env: Mapping[str, str] | None = None) -> int:
    """Pin this process to ``threads`` threads (at least 1); returns the count used.

    Sets the :data:`THREAD_VARS` (or ``env``, when given, e.g. a library's own extra
    variables) in ``os.environ`` -- replacing existing values unless ``override`` is
    false, which keeps a user's explicit setting -- and ``torch.set_num_threads``:
    with ``torch=None`` only when torch is already imported, with ``torch=True``
    importing it, never with ``torch=False``. The environment variables only take
    effect for libraries that read them later (at import or thread-pool start).
    """
    n = max(1, int(threads))
    for var, val in (thread_env(n) if env is None else env).items():
        if override:
            os.environ[var] = val
        else:
            os.environ.setdefault(var, val)
    if torch or (torch is None and "torch" in sys.modules):
        import torch as _torch

        if _torch.get_num_threads() != n:
            _torch.set_num_threads(n)
    return n
