"""Pick the frames whose atomic environments the labelled set covers least.

Greedy selection on QUESTS differential entropy δH(y | X) = -log Σ_x K(y, x), with the
Gaussian kernel K = exp(-|y - x|² / 2h²) on QUESTS descriptors (quests'
``delta_entropy`` convention: unnormalised, so δH > 0 reads "no labelled environment
within about h"). A frame's score is the mean δH of its atoms against everything already
labelled *plus* every frame already picked, so two near-identical candidates are never
both chosen. The mean rather than PFD-kit's sum, so a 64-atom cell does not outrank an
8-atom cell merely for having more atoms.

Species-aware: a central atom is compared only with labelled atoms of its own element
(PFD-kit pools all species, letting an O environment "cover" a Li one).
``species_aware=False`` reproduces the pooled behaviour, for comparison only. The QUESTS
descriptor itself is geometric, so the neighbours' elements are not distinguished: a Si
atom among O neighbours and one among Si neighbours in the same geometry still look
alike.

Cost, and how it is kept down (2,000 candidate 64-atom frames against 500 labelled ones;
figures in docs/benchmarks.md, ``benchmarks/selection_speed.py``):

* Descriptors: quests computes them frame by frame with a numba ``prange`` over the
  cell's bins. For exploration-sized cells (8 bins) the thread synchronisation costs more
  than it saves: with 2 numba threads on 2 busy cores it ran 6x slower than with 1, so
  descriptors are computed with one numba thread.
* Kernel sums: the one expensive step is S_j = Σ_x K(y_j, x) for every candidate atom
  against every labelled atom, once (128,000 x 32,000 = 4·10⁹ pairs). quests'
  ``kernel_sum`` (float64, takes a square root then squares it again) needs 13-16 ns a pair
  here, 55-65 s for that case. Instead the exponent -|y - x|²/2h² comes out of one BLAS
  matmul of augmented descriptors, [y, |y|², 1] · c[-2x, 1, |x|²]ᵀ, followed by an
  in-place exp and row sums over cache-sized tiles: ~1.8 ns a pair in float32, ~3.6 ns in
  float64. Descriptors are centred before the augmentation, which shrinks the
  cancellation in |y|² + |x|² - 2y·x about a hundredfold; that is what makes float32
  good enough (δH within ~1e-4 of quests' float64, far below the spread between frames).
  ``precision="float64"`` is the exact mode (matches quests to ~1e-12) at twice the cost.
* Exponents are clamped at -80 in float32 (-700 in float64) because exp of a result
  that would be subnormal takes a slow path (4x slower here), and δH is capped at
  ``DH_CAP``: what quests would report as e^-500 or an infinite δH becomes "maximally
  novel", which is all the ranking needs, and JSON records stay finite.
* Greedy updates: after the one-off pass over the labelled set, each pick adds only the
  picked frame's atoms to the candidates' sums (64 x 128,000 pairs, ~20 ms). Because the
  sums only grow, scores only fall, so the scores of successive picks never increase.
* ``chunk_size`` k > 1 takes the k best frames per round before refreshing, as PFD-kit's
  chunks do: k times fewer refreshes, but near-twins can land in the same chunk. With
  refreshes this cheap, k = 1 (exact greedy) is the default; k > 1 only pays when
  hundreds of frames are picked from very large pools.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from ase import Atoms

from pfd.config import SelectSpec

Precision = Literal["float32", "float64"]

DH_CAP = 80.0  # δH of an atom with no labelled neighbour of its element within ~12 h
_EXP_FLOOR: dict[str, float] = {"float32": -80.0, "float64": -700.0}
_TILE_COLS = 4096  # reference atoms per tile: a tile of 512 x 4096 float32 fits in L2/L3
_TILE_ELEMS = 1 << 21


@dataclass
class Selection:
    indices: list[int]
    scores: list[float] = field(default_factory=list)
    method: str = "entropy"
    timings_s: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def _numba_threads(n: int) -> Iterator[None]:
    import numba

    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(old)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def descriptors(frames: list[Atoms], k: int = 32, cutoff: float = 5.0) -> np.ndarray:
    """QUESTS descriptors of every atom of ``frames``, in frame order (one numba thread)."""
    from quests.descriptor import get_descriptors

    if not frames:
        return np.zeros((0, 2 * k - 1))
    with _numba_threads(1):
        return np.asarray(get_descriptors(list(frames), k=k, cutoff=cutoff), dtype=np.float64)


class KernelSums:
    """Σ_x K(y, x) for a fixed set of query descriptors ``y`` against batches of ``x``.

    The queries are centred and augmented once, because the greedy loop asks for the same
    queries against a new small batch after every pick.
    """

    def __init__(self, y: np.ndarray, bandwidth: float, precision: Precision = "float32",
                 threads: int = 1) -> None:
        import torch

        if precision not in _EXP_FLOOR:
            raise ValueError(f"precision must be float32 or float64, not {precision!r}")
        self.n = len(y)
        self.dtype = torch.float32 if precision == "float32" else torch.float64
        self.floor = _EXP_FLOOR[precision]
        self.scale = -0.5 / bandwidth**2
        self.threads = threads
        self.center = y.mean(axis=0) if len(y) else None
        if len(y):
            yc = y - self.center
            aug = np.hstack([yc, (yc * yc).sum(axis=1, keepdims=True), np.ones((len(y), 1))])
            self.ya = torch.from_numpy(aug).to(self.dtype)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        out = np.zeros(self.n)
        if self.n == 0 or len(x) == 0:
            return out
        xc = x - self.center
        aug = self.scale * np.hstack([-2.0 * xc, np.ones((len(x), 1)),
                                      (xc * xc).sum(axis=1, keepdims=True)])
        xa = torch.from_numpy(np.ascontiguousarray(aug.T)).to(self.dtype)
        bx = min(len(x), _TILE_COLS)
        by = max(64, min(self.n, _TILE_ELEMS // bx))
        res = torch.zeros(self.n, dtype=torch.float64)
        with torch.inference_mode(), _torch_threads(self.threads):
            buf = torch.empty((by, bx), dtype=self.dtype)
            for i in range(0, self.n, by):
                yb = self.ya[i:i + by]
                acc = torch.zeros(len(yb), dtype=torch.float64)
                for j in range(0, len(x), bx):
                    xb = xa[:, j:j + bx]
                    tile = buf[: len(yb), : xb.shape[1]]
                    torch.mm(yb, xb, out=tile)
                    tile.clamp_(min=self.floor, max=0.0).exp_()
                    acc += tile.sum(dim=1)
                res[i:i + len(yb)] = acc
        out[:] = res.numpy()
        return out


def kernel_sums(y: np.ndarray, x: np.ndarray, bandwidth: float,
                precision: Precision = "float32", threads: int = 1) -> np.ndarray:
    """quests.entropy.kernel_sum(y, x, h) by tiled matmul (see the module docstring)."""
    return KernelSums(y, bandwidth, precision, threads)(x)


def delta_entropy(sums: np.ndarray) -> np.ndarray:
    """δH = -log Σ K, capped at ``DH_CAP`` (no labelled neighbour at all is finite too)."""
    with np.errstate(divide="ignore"):
        return np.minimum(-np.log(sums), DH_CAP)


def entropy_select(candidates: list[Atoms], reference: list[Atoms], n: int,
                   spec: SelectSpec, threads: int = 1) -> Selection:
    """Greedy max-δH selection of ``n`` frames from ``candidates`` given ``reference``.

    ``threads`` bounds torch's kernel threads; one by default, like every pfd step, since
    workers run side by side on shared cores.
    """
    n = min(n, len(candidates))
    if n == 0:
        return Selection([], [], "entropy")
    t0 = time.perf_counter()
    yd = descriptors(candidates, spec.k_neighbours, spec.cutoff_A)
    xd = descriptors(reference, spec.k_neighbours, spec.cutoff_A)
    t1 = time.perf_counter()

    def group_of(frames: list[Atoms]) -> np.ndarray:
        if not frames:
            return np.zeros(0, dtype=int)
        if not spec.species_aware:
            return np.zeros(sum(len(a) for a in frames), dtype=int)
        return np.concatenate([a.numbers for a in frames])

    y_grp, x_grp = group_of(candidates), group_of(reference)
    natoms = np.array([len(a) for a in candidates])
    owner = np.repeat(np.arange(len(candidates)), natoms)
    offsets = np.concatenate([[0], np.cumsum(natoms)])

    sums = np.zeros(len(yd))
    rows: dict[int, np.ndarray] = {}
    kernels: dict[int, KernelSums] = {}
    for g in np.unique(y_grp):
        rows[int(g)] = np.flatnonzero(y_grp == g)
        kernels[int(g)] = KernelSums(yd[rows[int(g)]], spec.bandwidth, spec.precision, threads)
        sums[rows[int(g)]] = kernels[int(g)](xd[x_grp == g])
    t2 = time.perf_counter()

    chosen: list[int] = []
    chosen_scores: list[float] = []
    available = np.ones(len(candidates), dtype=bool)
    while len(chosen) < n:
        frame = np.bincount(owner, weights=delta_entropy(sums), minlength=len(natoms)) / natoms
        frame[~available] = -np.inf
        k = min(spec.chunk_size, n - len(chosen))
        picks = np.argsort(-frame, kind="stable")[:k]
        for p in picks:
            chosen.append(int(p))
            chosen_scores.append(float(frame[p]))
            available[p] = False
        if len(chosen) == n:
            break
        new = np.concatenate([np.arange(offsets[p], offsets[p + 1]) for p in picks])
        for g in np.unique(y_grp[new]):
            sums[rows[int(g)]] += kernels[int(g)](yd[new[y_grp[new] == g]])
    t3 = time.perf_counter()
    return Selection(chosen, chosen_scores, "entropy",
                     {"descriptors": t1 - t0, "reference": t2 - t1, "greedy": t3 - t2})


def random_select(candidates: list[Atoms], n: int, seed: int) -> Selection:
    rng = np.random.default_rng(seed)
    n = min(n, len(candidates))
    idx = sorted(int(i) for i in rng.choice(len(candidates), size=n, replace=False))
    return Selection(idx, [], "random")


def select_frames(candidates: list[Atoms], reference: list[Atoms], spec: SelectSpec,
                  **kwargs: Any) -> Selection:
    if spec.method == "random":
        return random_select(candidates, spec.n_frames, spec.seed)
    return entropy_select(candidates, reference, spec.n_frames, spec, **kwargs)
