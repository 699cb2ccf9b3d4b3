"""The teacher as a labeller: the same cache, fan-out and failure records as DFT.

Relabelling goes through :func:`pfd.label.cache.label_frames`, so a frame the teacher has
labelled once (a resumed run, a later refinement round) is never computed again, and the
teacher's labels can never be mistaken for another model's: the cache key holds the
model's store key and the hash of its ``pfd_model.json``.
"""

from __future__ import annotations

import functools
import hashlib

from ase import Atoms

from pfd.frames import strip_labels
from pfd.label.cache import label_frames
from pfd.label.calculator import CalculatorLabeller
from pfd.model_cache import cached_calculator
from pfd.models.meta import MODEL_JSON
from pfd.run_store import RunContext
from pfd.steps import MapFn, serial_map

__all__ = ["relabel", "teacher_labeller"]


def teacher_labeller(ctx: RunContext, model_key: str, batch_size: int = 32
                     ) -> CalculatorLabeller:
    """A picklable labeller that loads ``model_key`` once per worker process."""
    meta = ctx.store.get_bytes(f"{model_key}/{MODEL_JSON}")
    identity = f"pfd-model:{model_key}:{hashlib.sha256(meta).hexdigest()[:16]}"
    factory = functools.partial(cached_calculator, ctx.store_url, model_key,
                                str(ctx.workdir), 1)
    return CalculatorLabeller(factory=factory, identity=identity, batch_size=batch_size,
                              name="teacher")


def relabel(ctx: RunContext, model_key: str, frames: list[Atoms],
            map_fn: MapFn = serial_map) -> tuple[list[Atoms], int]:
    """``frames`` labelled by ``model_key`` (their own labels dropped), and how many failed.

    A frame the model cannot label (non-finite output) is left out and counted: one bad
    geometry must not stop a distillation that has thousands.
    """
    if not frames:
        return [], 0
    bare = [strip_labels(a) for a in frames]
    res = label_frames(teacher_labeller(ctx, model_key), bare, ctx.store_url, map_fn=map_fn,
                       scratch=str(ctx.workdir / "scratch"))
    return res.labelled, len(res.failed)
