"""Content-addressed labels: a frame is never paid for twice.

Key: ``labels/<labeller fingerprint>/<frame hash>.extxyz``. A worker writes the label
to the store the moment the engine returns, before anything else can fail, so a killed
run keeps every finished DFT frame. Permanent failures are cached too (``.failed.json``):
re-running a frame that deterministically fails only burns allocation again. Transient
failures are not cached, so the next run tries them again. Either way a failure comes
back as data (reason, output tail, corrections tried, kept scratch directory), never as
an exception that sinks the rest of the batch.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from pfd.frames import frame_hash, strip_labels
from pfd.label.base import (
    LABEL_INFO_KEYS,
    BatchLabeller,
    FailedFrame,
    LabelError,
    Labeller,
    LabelResult,
)
from pfd.label.scratch import frame_scratch
from pfd.store import ArtifactStore, open_store

MapFn = Callable[..., Iterable[Any]]


def label_key(fingerprint: str, fhash: str) -> str:
    return f"labels/{fingerprint}/{fhash}.extxyz"


def failure_key(fingerprint: str, fhash: str) -> str:
    return f"labels/{fingerprint}/{fhash}.failed.json"


Outcome = tuple[str, Atoms | dict[str, Any]]


def _failure(err: LabelError, fp: str, fhash: str, workdir: Path | None) -> dict[str, Any]:
    return {"frame_hash": fhash, "labeller": fp, "reason": err.reason, "tail": err.tail,
            "corrections": err.corrections, "permanent": err.permanent,
            "workdir": str(workdir) if workdir is not None else None}


def _as_label_error(err: Exception) -> LabelError:
    """Unexpected exceptions (a parser bug, a full disk) still fail one frame, not the batch."""
    if isinstance(err, LabelError):
        return err
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {err.filename}" if err.filename else ""
        return LabelError(f"scratch disk full ({os.strerror(err.errno)}){where}: free space "
                          "in the work directory (pfd run --workdir) and rerun")
    return LabelError(f"unexpected {type(err).__name__}: {err}")


def _lookup(store: ArtifactStore, fp: str, h: str, retry_failed: bool) -> Outcome | None:
    key, fkey = label_key(fp, h), failure_key(fp, h)
    if store.exists(key):
        return "cached", store.get_frames(key)[0]
    if store.exists(fkey) and not retry_failed:
        return "failed-cached", dict(store.get_json(fkey))
    return None


def _record(store: ArtifactStore, fp: str, h: str, result: Atoms | LabelError,
            workdir: Path | None) -> Outcome:
    if isinstance(result, LabelError):
        payload = _failure(result, fp, h, workdir)
        if result.permanent:
            store.put_json(failure_key(fp, h), payload)
        return "failed", payload
    result.info["frame_hash"] = h
    store.put_frames(label_key(fp, h), [result])
    return "computed", result


def label_cached(labeller: Labeller, store_url: str, atoms: Atoms, scratch: str | None = None,
                 retry_failed: bool = False, keep_scratch: bool = False) -> Outcome:
    """Label one frame through the cache. Runs on a Dask worker, so it takes a store URL.

    Returns ``("cached"|"computed", labelled)`` or ``("failed"|"failed-cached", record)``.
    """
    store = open_store(store_url)
    fp, h = labeller.fingerprint(), frame_hash(atoms)
    hit = _lookup(store, fp, h, retry_failed)
    if hit is not None:
        return hit
    workdir: Path | None = None
    result: Atoms | LabelError
    try:
        with frame_scratch(scratch, fp, h, keep=keep_scratch) as workdir:
            result = labeller.label(strip_labels(atoms), workdir)
    except Exception as err:  # noqa: BLE001 - every failure becomes data
        result = _as_label_error(err)
    return _record(store, fp, h, result, workdir if isinstance(result, LabelError) else None)


def label_cached_batch(labeller: BatchLabeller, store_url: str, frames: list[Atoms],
                       scratch: str | None = None, retry_failed: bool = False,
                       keep_scratch: bool = False) -> list[Outcome]:
    """Label a batch in one call (one model load), skipping frames already in the cache."""
    store = open_store(store_url)
    fp = labeller.fingerprint()
    hashes = [frame_hash(a) for a in frames]
    outcomes: list[Outcome | None] = [_lookup(store, fp, h, retry_failed) for h in hashes]
    todo = [i for i, o in enumerate(outcomes) if o is None]
    if todo:
        tag = hashlib.sha256("".join(hashes[i] for i in todo).encode()).hexdigest()
        workdir: Path | None = None
        results: list[Atoms | LabelError]
        try:
            with frame_scratch(scratch, fp, f"batch-{tag}", keep=keep_scratch) as workdir:
                results = list(labeller.label_batch([strip_labels(frames[i]) for i in todo],
                                                    workdir))
            if len(results) != len(todo):
                raise LabelError(f"{labeller.name}: label_batch returned {len(results)} "
                                 f"results for {len(todo)} frames")
        except Exception as err:  # noqa: BLE001 - the whole batch failed, frame by frame
            results = [_as_label_error(err)] * len(todo)
        for i, res in zip(todo, results, strict=True):
            outcomes[i] = _record(store, fp, hashes[i], res, workdir)
    return [o for o in outcomes if o is not None]


def _serial_map(fn: Callable[..., Any], *iterables: Iterable[Any]) -> Iterator[Any]:
    return map(fn, *iterables)


def label_frames(labeller: Labeller, frames: Sequence[Atoms], store_url: str,
                 map_fn: MapFn | None = None, scratch: str | None = None,
                 retry_failed: bool = False, keep_scratch: bool = False) -> LabelResult:
    """Label many frames; ``map_fn`` is e.g. a Dask executor's ``map`` for fan-out.

    Order of ``labelled`` follows the input; duplicates (same hash) are labelled once.
    A :class:`BatchLabeller` with ``batch_size > 1`` gets one task per batch.
    """
    mapper = map_fn or _serial_map
    hashes = [frame_hash(a) for a in frames]
    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        first.setdefault(h, i)
    unique = [frames[i] for i in first.values()]
    n = len(unique)
    batch = int(getattr(labeller, "batch_size", 1) or 1)
    if isinstance(labeller, BatchLabeller) and batch > 1:
        chunks = [unique[i:i + batch] for i in range(0, n, batch)]
        k = len(chunks)
        per_chunk = mapper(label_cached_batch, [labeller] * k, [store_url] * k, chunks,
                           [scratch] * k, [retry_failed] * k, [keep_scratch] * k)
        outcomes = [o for chunk in per_chunk for o in chunk]
    else:
        outcomes = list(mapper(label_cached, [labeller] * n, [store_url] * n, unique,
                               [scratch] * n, [retry_failed] * n, [keep_scratch] * n))
    by_hash = dict(zip(first, outcomes, strict=True))
    result = LabelResult()
    counted: set[str] = set()
    for i, h in enumerate(hashes):
        status, payload = by_hash[h]
        if status in ("cached", "computed"):
            assert isinstance(payload, Atoms)
            labelled = payload.copy()  # duplicates must not share info or calculator
            labelled.calc = SinglePointCalculator(labelled, **payload.calc.results)
            # provenance (trajectory, structure) is this input's, not that of whichever
            # frame first paid for the cached label; the label's own record comes on top
            labelled.info = {k: v for k, v in frames[i].info.items()
                             if k not in LABEL_INFO_KEYS}
            labelled.info.update({k: v for k, v in payload.info.items()
                                  if k in LABEL_INFO_KEYS})
            result.labelled.append(labelled)
            if h not in counted:
                result.cached += status == "cached"
                result.computed += status == "computed"
        else:
            assert isinstance(payload, dict)
            result.failed.append(FailedFrame(
                h, str(payload.get("reason", "unknown")), i, tail=str(payload.get("tail", "")),
                corrections=list(payload.get("corrections") or []),
                workdir=payload.get("workdir")))
        counted.add(h)
    return result
