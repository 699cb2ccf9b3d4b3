"""Pick the frames whose atomic environments the labelled set covers least.

Greedy selection on QUESTS differential entropy δH(y | X) = -log Σ_x K(y, x): a frame's
score is the mean δH of its atoms against everything already labelled *plus* every
frame already picked, so two near-identical candidates are never both chosen.
Species-aware: a central atom is compared only with reference atoms of its own element
(PFD-kit pools all species, letting an O environment "cover" a Li one).

The kernel sums are kept per candidate atom and updated incrementally after each pick
(only the new frame's atoms are added), so n picks cost n small kernel evaluations
instead of n full recomputations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms

from pfd.config import SelectSpec

_EMPTY_SCORE = 1e3  # δH for an atom of an element never seen before: always novel


@dataclass
class Selection:
    indices: list[int]
    scores: list[float] = field(default_factory=list)
    method: str = "entropy"


def _descriptors(frames: list[Atoms], k: int, cutoff: float) -> np.ndarray:
    from quests.descriptor import get_descriptors

    if not frames:
        return np.zeros((0, 2 * k - 1))
    return np.asarray(get_descriptors(list(frames), k=k, cutoff=cutoff))


def _kernel_sum(y: np.ndarray, x: np.ndarray, h: float) -> np.ndarray:
    from quests.entropy import kernel_sum

    if len(x) == 0 or len(y) == 0:
        return np.zeros(len(y))
    return np.asarray(kernel_sum(y, x, h=h))


def entropy_select(candidates: list[Atoms], reference: list[Atoms], n: int,
                   spec: SelectSpec, bandwidth: float = 0.015) -> Selection:
    """Greedy species-aware max-δH selection of ``n`` frames from ``candidates``."""
    n = min(n, len(candidates))
    if n == 0:
        return Selection([], [], "entropy")
    k, rc = spec.k_neighbours, spec.cutoff_A
    yd = _descriptors(candidates, k, rc)
    xd = _descriptors(reference, k, rc)
    y_sym = np.concatenate([a.numbers for a in candidates])
    x_sym = np.concatenate([a.numbers for a in reference]) if reference else np.zeros(0, int)
    owner = np.concatenate([np.full(len(a), i) for i, a in enumerate(candidates)])
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in candidates])])

    # S[j] = Σ_x K(y_j, x) over same-element reference atoms; N[el] = reference count
    sums = np.zeros(len(yd))
    counts: dict[int, int] = {}
    for el in np.unique(y_sym):
        m = y_sym == el
        xm = x_sym == el
        counts[int(el)] = int(xm.sum())
        sums[m] = _kernel_sum(yd[m], xd[xm], bandwidth)

    def scores() -> np.ndarray:
        n_ref = np.array([counts[int(el)] for el in y_sym], dtype=float)
        with np.errstate(divide="ignore"):
            dh = np.where(n_ref > 0, -np.log(np.maximum(sums, 1e-300) / np.maximum(n_ref, 1)),
                          _EMPTY_SCORE)
        return np.bincount(owner, weights=dh) / np.bincount(owner)

    chosen: list[int] = []
    chosen_scores: list[float] = []
    available = np.ones(len(candidates), dtype=bool)
    for _ in range(n):
        sc = np.where(available, scores(), -np.inf)
        best = int(np.argmax(sc))
        chosen.append(best)
        chosen_scores.append(float(sc[best]))
        available[best] = False
        new = slice(offsets[best], offsets[best + 1])
        new_d, new_sym = yd[new], y_sym[new]
        for el in np.unique(new_sym):
            m = y_sym == el
            sums[m] += _kernel_sum(yd[m], new_d[new_sym == el], bandwidth)
            counts[int(el)] += int((new_sym == el).sum())
    return Selection(chosen, chosen_scores, "entropy")


def random_select(candidates: list[Atoms], n: int, seed: int) -> Selection:
    rng = np.random.default_rng(seed)
    n = min(n, len(candidates))
    idx = sorted(int(i) for i in rng.choice(len(candidates), size=n, replace=False))
    return Selection(idx, [], "random")


def select_frames(candidates: list[Atoms], reference: list[Atoms], spec: SelectSpec) -> Selection:
    if spec.method == "random":
        return random_select(candidates, spec.n_frames, spec.seed)
    return entropy_select(candidates, reference, spec.n_frames, spec)
