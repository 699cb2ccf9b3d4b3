"""The PFD paper's Si frames as the model benchmarks (P1–P3) use them.

One split for all of them — P6's (``p6_selection.stratified_split``: test every 5th
frame ordered by cell size and energy per atom, a small validation split for early
stopping, the rest a training pool) — so a teacher fine-tuned in P1 is tested in P3
on exactly the frames P1 held out. Training sets are nested prefixes of one seeded
permutation of the pool: the 400-frame set contains the 200-frame set, and so on, so
a learning curve measures more data rather than different data.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT  # noqa: E402
from p6_selection import DATA, SOURCE, require_data, stratified_split  # noqa: E402

sys.path.insert(0, str(ROOT))
from pfd import frames as fr  # noqa: E402

__all__ = ["CACHE", "DATA", "SOURCE", "SiSplit", "load_split", "offset_refit_energy_rmse",
           "settings_key", "load_average", "pin_threads"]

#: Trained models kept between runs (gitignored), so P3 can reuse P1's teacher.
CACHE = ROOT / "benchmarks" / ".cache"


class SiSplit:
    """Frames and the fixed test / validation / pool indices."""

    def __init__(self, frames: list[Atoms], test: list[int], valid: list[int],
                 pool: list[int], order_seed: int) -> None:
        self.frames, self.test, self.valid, self.pool = frames, test, valid, pool
        self.order = [int(i) for i in np.random.default_rng(order_seed).permutation(pool)]
        self.order_seed = order_seed

    def train(self, n: int) -> list[int]:
        """The first ``n`` frames of the seeded pool permutation."""
        if not 0 < n <= len(self.order):
            raise ValueError(f"training size {n} outside 1..{len(self.order)} (pool size)")
        return self.order[:n]

    def take(self, idx: list[int]) -> list[Atoms]:
        return [self.frames[i] for i in idx]

    def describe(self, test_every: int, valid_every: int) -> dict[str, Any]:
        sizes = sorted({len(a) for a in self.frames})
        return {"test": len(self.test), "valid": len(self.valid), "pool": len(self.pool),
                "how": f"frames ordered by (natoms, E/atom); test = every {test_every}th, "
                       f"valid = every {valid_every}th of the rest (early stopping only); "
                       f"training sets = prefixes of one permutation of the pool "
                       f"(seed {self.order_seed})",
                "test_natoms": {str(n): sum(len(self.frames[i]) == n for i in self.test)
                                for n in sizes}}


def load_split(test_every: int = 5, valid_every: int = 40, order_seed: int = 0,
               data: Path = DATA) -> SiSplit:
    frames = fr.read_frames(require_data(data))
    test, valid, pool = stratified_split(frames, test_every, valid_every)
    return SiSplit(frames, test, valid, pool, order_seed)


def offset_refit_energy_rmse(reference: list[Atoms], predicted: list[Atoms]) -> float:
    """Energy RMSE (meV/atom) after refitting one offset per element on these frames.

    Models trained in different energy references (VASP's, SevenNet's shifted one) are
    then compared on the physics only, as the data's README asks; for one element this
    is the standard deviation of the per-atom energy error.
    """
    elements = fr.species(reference)
    counts = np.array([[a.get_chemical_symbols().count(e) for e in elements]
                       for a in reference], dtype=float)
    natoms = counts.sum(axis=1)
    err = np.array([fr.energy(p) - fr.energy(r) for r, p in zip(reference, predicted,
                                                                 strict=True)])
    mu, *_ = np.linalg.lstsq(counts / natoms[:, None], err / natoms, rcond=None)
    resid = err / natoms - (counts / natoms[:, None]) @ mu
    return float(1000 * np.sqrt(np.mean(resid**2)))


def settings_key(*parts: Any) -> str:
    """Short content hash naming a cached model: anything that changes it is in here."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def pin_threads() -> None:
    """One thread per process: the machines these run on are small and shared."""
    from pfd.models.deepmd_run import thread_env
    from pfd.threads import pin_threads as pin

    pin(1, torch=True, override=False, env=thread_env(1))
