"""Trained models in the store, and this machine's local copies of them.

A model is a directory under one store key; ``pfd_model.json`` is uploaded last and is
its completion marker. Many processes (Dask workers, validation, ``pfd fetch``) read the
same model at once, so the local copy follows three rules:

* it is downloaded into a private temporary directory and published with one atomic
  ``rename``: a reader sees either no copy or a complete one;
* a complete copy is never deleted or replaced: the loser of a download race throws away
  its *own* temporary directory, never the winner's copy, which someone may be loading;
* a directory left without its marker (a copy from before these rules, or a disk
  problem) is moved aside with a rename, never deleted in place, before a new copy is
  published.
"""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from pfd.models.meta import MODEL_JSON
from pfd.store import ArtifactStore, open_store

__all__ = ["cached_calculator", "fetch_model", "local_model_dir", "model_ready",
           "upload_model"]


def upload_model(store: ArtifactStore, key: str, model_dir: Path) -> None:
    """Upload a model directory; ``pfd_model.json`` goes last as the completion marker."""
    model_dir = Path(model_dir)
    if not (model_dir / MODEL_JSON).is_file():
        raise FileNotFoundError(f"{model_dir / MODEL_JSON}: not a trained model directory "
                                "(its pfd_model.json is missing); nothing was uploaded")
    for p in sorted(model_dir.rglob("*")):
        if p.is_file() and p.name != MODEL_JSON:
            store.put_file(f"{key}/{p.relative_to(model_dir).as_posix()}", p)
    store.put_file(f"{key}/{MODEL_JSON}", model_dir / MODEL_JSON)


def model_ready(store: ArtifactStore, key: str) -> bool:
    return store.exists(f"{key}/{MODEL_JSON}")


def local_model_dir(cache_root: Path, key: str) -> Path:
    return Path(cache_root) / "models" / key.replace("/", "_")


def fetch_model(store_url: str, key: str, cache_root: Path) -> Path:
    """This machine's complete local copy of the stored model ``key`` (downloaded once)."""
    local = local_model_dir(cache_root, key)
    if (local / MODEL_JSON).is_file():
        return local
    store = open_store(store_url)
    if not model_ready(store, key):
        raise FileNotFoundError(
            f"model {key!r} is not in the store {store.url} (no {key}/{MODEL_JSON}); it was "
            "never trained or its upload did not finish: rerun the run that trains it")
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.part-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        store.get_dir(key, tmp)
        if not (tmp / MODEL_JSON).is_file():
            raise FileNotFoundError(f"model {key!r}: {MODEL_JSON} vanished from the store "
                                    "while it was downloaded")
        _publish(tmp, local)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # ours only; gone already when published
    return local


def _publish(tmp: Path, local: Path) -> None:
    """Rename ``tmp`` to ``local`` unless a complete copy is there already.

    Publishers take a lock first: "is there a complete copy?" and "move an incomplete
    leftover aside" must be one step, or a publisher could move aside a copy another
    one completed in between (the stress test caught exactly that). Readers take no
    lock: they only ever open a complete copy.
    """
    lock = local.with_name(f".{local.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if (local / MODEL_JSON).is_file():
            return  # another process won: keep its copy, ours is discarded
        if local.exists():  # incomplete leftover (e.g. from an older pfd): move it aside
            aside = local.with_name(f".{local.name}.stale-{uuid.uuid4().hex[:8]}")
            local.rename(aside)
            shutil.rmtree(aside, ignore_errors=True)
        tmp.rename(local)
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=4)
def cached_calculator(store_url: str, key: str, cache_root: str, threads: int) -> Any:
    """The model's ASE calculator, loaded once per process (workers run many items)."""
    from pfd.models.registry import load_calculator

    return load_calculator(fetch_model(store_url, key, Path(cache_root)), threads=threads)
