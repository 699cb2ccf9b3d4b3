"""Content-addressed labels: a frame is never paid for twice.

Key: ``labels/<labeller fingerprint>/<frame hash>.extxyz``. A worker writes the label
to the store the moment pw.x returns, before anything else can fail, so a killed run
keeps every finished DFT frame. Permanent failures are cached too (``.failed.json``):
re-running a frame that deterministically fails only burns allocation again. Transient
failures are not cached, so the next run tries them again.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ase import Atoms

from pfd.frames import frame_hash, strip_labels
from pfd.label.base import FailedFrame, LabelError, Labeller, LabelResult
from pfd.store import open_store

MapFn = Callable[..., Iterable[Any]]


def label_key(fingerprint: str, fhash: str) -> str:
    return f"labels/{fingerprint}/{fhash}.extxyz"


def failure_key(fingerprint: str, fhash: str) -> str:
    return f"labels/{fingerprint}/{fhash}.failed.json"


def label_cached(labeller: Labeller, store_url: str, atoms: Atoms, scratch: str | None = None,
                 retry_failed: bool = False) -> tuple[str, Atoms | str]:
    """Label one frame through the cache. Runs on a Dask worker, so it takes a store URL.

    Returns ``("cached"|"computed", labelled)`` or ``("failed"|"failed-cached", reason)``.
    """
    store = open_store(store_url)
    fp, h = labeller.fingerprint(), frame_hash(atoms)
    key, fkey = label_key(fp, h), failure_key(fp, h)
    if store.exists(key):
        return "cached", store.get_frames(key)[0]
    if store.exists(fkey) and not retry_failed:
        return "failed-cached", str(store.get_json(fkey)["reason"])
    with tempfile.TemporaryDirectory(prefix=f"pfd-{labeller.name}-", dir=scratch) as tmp:
        try:
            labelled = labeller.label(strip_labels(atoms), Path(tmp))
        except LabelError as err:
            if err.permanent:
                store.put_json(fkey, {"frame_hash": h, "labeller": fp, "reason": err.reason})
            return "failed", err.reason
    labelled.info["frame_hash"] = h
    store.put_frames(key, [labelled])
    return "computed", labelled


def _serial_map(fn: Callable[..., Any], *iterables: Iterable[Any]) -> Iterator[Any]:
    return map(fn, *iterables)


def label_frames(labeller: Labeller, frames: Sequence[Atoms], store_url: str,
                 map_fn: MapFn | None = None, scratch: str | None = None,
                 retry_failed: bool = False) -> LabelResult:
    """Label many frames; ``map_fn`` is e.g. a Dask executor's ``map`` for fan-out.

    Order of ``labelled`` follows the input; duplicates (same hash) are labelled once.
    """
    mapper = map_fn or _serial_map
    n = len(frames)
    outcomes = list(mapper(label_cached, [labeller] * n, [store_url] * n, list(frames),
                           [scratch] * n, [retry_failed] * n))
    result = LabelResult()
    for i, (status, payload) in enumerate(outcomes):
        if status in ("cached", "computed"):
            assert isinstance(payload, Atoms)
            # keep provenance of where the frame came from (trajectory, structure)
            for k, v in frames[i].info.items():
                payload.info.setdefault(k, v)
            result.labelled.append(payload)
            if status == "cached":
                result.cached += 1
            else:
                result.computed += 1
        else:
            result.failed.append(FailedFrame(frame_hash(frames[i]), str(payload), i))
    return result
