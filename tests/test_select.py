"""Pre-label filters and entropy selection on real Si frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read

from pfd.config import FilterSpec, SelectSpec
from pfd.frames import attach_labels
from pfd.select.entropy import entropy_select, random_select, select_frames
from pfd.select.filters import apply_filters, rejection_reason

DATA = Path(__file__).resolve().parents[2] / "shared/data/pfd-paper/Si/train.extxyz"


def test_filters_count_each_reason() -> None:
    good = bulk("Si", "diamond", a=5.43, cubic=True)
    close = good.copy()
    close.positions[1] = close.positions[0] + [0.5, 0, 0]
    skew = bulk("Si", "diamond", a=5.43, cubic=True)
    cell = skew.cell.array.copy()
    cell[1] += 2.0 * cell[0]  # ~27° angle: far from 60/90/120
    skew.set_cell(cell, scale_atoms=True)
    long = good.repeat((6, 1, 1))
    hot = attach_labels(good, 0.0, np.full((8, 3), 30.0))
    frames = [good, close, skew, long, hot]
    kept, rejected = apply_filters(frames, FilterSpec())
    assert kept == [good]
    assert rejected == {"min_distance:Si-Si": 1, "cell_skew": 1, "cell_length_ratio": 1,
                        "max_force": 1}
    # hexagonal cells (120°) are legitimate
    assert rejection_reason(bulk("Si", "hcp", a=2.7, c=4.4), FilterSpec()) is None


@pytest.fixture(scope="module")
def si_frames() -> list:
    if not DATA.exists():
        pytest.skip(f"{DATA} not present")
    frames = read(DATA, index=":")
    return [a for a in frames if len(a) == 16][:60]


def test_entropy_prefers_novel_frames(si_frames: list) -> None:
    # reference: many copies of ONE environment family; candidates: near-duplicates of the
    # reference plus a few different frames. Entropy selection must pick the different ones.
    ref = si_frames[:1] * 5
    dupes = [si_frames[0].copy() for _ in range(6)]
    for i, d in enumerate(dupes):
        d.rattle(1e-4, seed=i)
    novel = si_frames[20:23]
    cands = dupes + novel
    sel = entropy_select(cands, ref, 3, SelectSpec(n_frames=3))
    assert sorted(sel.indices) == [6, 7, 8]
    assert sel.scores[0] >= sel.scores[-1]


def test_entropy_greedy_never_picks_twins(si_frames: list) -> None:
    a = si_frames[30]
    twins = [a.copy(), a.copy()]
    twins[1].rattle(1e-5, seed=1)
    other = si_frames[40]
    sel = entropy_select(twins + [other], [], 2, SelectSpec(n_frames=2))
    assert 2 in sel.indices and len(set(sel.indices) & {0, 1}) == 1


def test_entropy_is_species_aware() -> None:
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    ge = si.copy()
    ge.symbols = ["Ge"] * 8
    # identical geometry, different element: Si reference must not "cover" the Ge frame
    sel = entropy_select([si.copy(), ge], [si], 1, SelectSpec(n_frames=1))
    assert sel.indices == [1]


def test_random_and_dispatch(si_frames: list) -> None:
    r1 = random_select(si_frames, 5, seed=3)
    r2 = random_select(si_frames, 5, seed=3)
    assert r1.indices == r2.indices and len(set(r1.indices)) == 5
    s = select_frames(si_frames[:4], [], SelectSpec(method="random", n_frames=10))
    assert sorted(s.indices) == [0, 1, 2, 3]
    assert entropy_select([], si_frames, 3, SelectSpec()).indices == []
