"""The run's DFT labeller as an ASE calculator, through the content-addressed label cache.

Validation needs DFT where ASE expects a calculator (an optimiser relaxing a vacancy,
phonopy's displaced cells). Every call goes through :func:`pfd.label.cache.label_frames`,
so a geometry is never paid for twice and an interrupted relaxation, rerun, replays its
finished steps from the cache. Results are always taken as the cache stores them (an
extxyz round trip), so a fresh and a replayed step are bit-identical and the optimiser
retraces the same path instead of drifting off the cached geometries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ase import Atoms
from ase.calculators.calculator import CalculationFailed, Calculator, all_changes

from pfd import frames as fr
from pfd.label.base import Labeller
from pfd.label.cache import label_frames, label_key
from pfd.store import open_store

MapFn = Callable[..., Iterable[Any]]


class DFTNotCached(CalculationFailed):
    """A cache-only calculator was asked for a frame nobody has paid for yet."""


class LabellerCalculator(Calculator):
    """energy, forces and stress from ``labeller`` (cached in the store at ``store_url``).

    ``cache_only`` never runs the labeller: frames already in the label cache are served,
    any other raises :class:`DFTNotCached` (``pfd validate --no-dft`` still shows the DFT
    results that exist).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, labeller: Labeller, store_url: str, scratch: str | None = None,
                 map_fn: MapFn | None = None, cache_only: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.labeller = labeller
        self.store_url = store_url
        self.scratch = scratch
        self.map_fn = map_fn
        self.cache_only = cache_only
        self.computed = 0  # labeller runs paid for by this calculator
        self.cached = 0

    def label(self, frames: Sequence[Atoms]) -> list[Atoms]:
        """Label many frames at once (fanned out with ``map_fn``); raises on any failure."""
        if self.cache_only:
            store, fp = open_store(self.store_url), self.labeller.fingerprint()
            missing = sum(not store.exists(label_key(fp, fr.frame_hash(a))) for a in frames)
            if missing:
                raise DFTNotCached(f"{missing} of {len(frames)} frames are not in the label "
                                   "cache and DFT is off")
        res = label_frames(self.labeller, list(frames), self.store_url, self.map_fn,
                           scratch=self.scratch)
        self.computed += res.computed
        self.cached += res.cached
        if res.failed:
            f = res.failed[0]
            raise CalculationFailed(
                f"{self.labeller.name}: {len(res.failed)} of {len(frames)} frames failed; "
                f"first: {f.reason}" + (f"\n{f.tail}" if f.tail else ""))
        # the cache's own representation: what a later rerun reads back
        return fr.from_extxyz(fr.to_extxyz(res.labelled))

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy",),
                  system_changes: Sequence[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        out = self.label([fr.strip_labels(self.atoms)])[0]
        e = fr.energy(out)
        self.results = {"energy": e, "free_energy": e, "forces": fr.forces(out)}
        s = fr.stress(out)
        if s is not None:
            self.results["stress"] = s
