"""Pre-label filters and entropy selection on real Si frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import read

from pfd.config import FilterSpec, SelectSpec
from pfd.frames import attach_labels
from pfd.select.entropy import (
    DH_CAP,
    delta_entropy,
    descriptors,
    entropy_select,
    kernel_sums,
    random_select,
    select_frames,
)
from pfd.select.filters import apply_filters, rejection_reason

DATA = Path(__file__).resolve().parent / "data/si_paper/train.extxyz"  # see data/README.md


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


# --------------------------------------------------------------------------- entropy: scale
def _diamond(symbol: str, a: float, rattle: float, seed: int, strain: float = 0.0) -> Atoms:
    atoms = bulk("Si", "diamond", a=a, cubic=True)
    atoms.set_chemical_symbols([symbol] * len(atoms))
    if strain:
        atoms.set_cell(atoms.cell.array * (1 + strain), scale_atoms=True)
    atoms.rattle(rattle, seed=seed)
    return atoms


def test_species_blind_selector_fails_where_species_aware_succeeds() -> None:
    # Labelled: Si diamond (a = 5.43) and Ge diamond (a = 5.66). Candidates: (A) the very Si
    # geometries relabelled as Ge - for Ge these are new environments (Ge at the Si lattice
    # constant); (B) Si frames under a mild 2 % strain. Both elements are in the labelled
    # set, so this is not the easy "unseen element" case.
    si_ref = [_diamond("Si", 5.43, 0.03, s) for s in range(3)]
    ge_ref = [_diamond("Ge", 5.66, 0.03, 10 + s) for s in range(3)]
    relabelled = []
    for atoms in si_ref:
        ge = atoms.copy()
        ge.set_chemical_symbols(["Ge"] * len(ge))
        relabelled.append(ge)
    mild = [_diamond("Si", 5.43, 0.03, 20 + s, strain=0.02) for s in range(3)]
    cands = relabelled + mild  # 0-2: A, 3-5: B
    aware = entropy_select(cands, si_ref + ge_ref, 1, SelectSpec(precision="float64"))
    blind = entropy_select(cands, si_ref + ge_ref, 3,
                           SelectSpec(precision="float64", species_aware=False))
    assert aware.indices[0] in {0, 1, 2}
    # pooled over species, the relabelled frames look like exact copies of the Si reference
    assert sorted(blind.indices) == [3, 4, 5]
    assert aware.scores[0] > 5.0 > 0.0 > max(blind.scores)


def _brute_force_greedy(cands: list[Atoms], ref: list[Atoms], n: int, h: float) -> list[int]:
    """The definition, recomputed from scratch after every pick with quests' own δH."""
    from quests.descriptor import get_descriptors
    from quests.entropy import delta_entropy

    chosen: list[int] = []
    for _ in range(n):
        labelled = ref + [cands[i] for i in chosen]
        xd = get_descriptors(labelled)
        best, best_score = -1, -np.inf
        for i, atoms in enumerate(cands):
            if i in chosen:
                continue
            score = float(np.mean(delta_entropy(get_descriptors([atoms]), xd, h=h)))
            if score > best_score:
                best, best_score = i, score
        chosen.append(best)
    return chosen


@pytest.mark.slow
def test_incremental_greedy_equals_brute_force(si_frames: list) -> None:
    ref, cands = si_frames[:4], si_frames[4:20]
    expected = _brute_force_greedy(cands, ref, 5, h=0.015)
    for precision in ("float64", "float32"):
        sel = entropy_select(cands, ref, 5, SelectSpec(precision=precision))
        assert sel.indices == expected, precision
        # sums only grow as frames are added, so successive picks never score higher
        assert all(a >= b for a, b in zip(sel.scores, sel.scores[1:], strict=False))


def test_kernel_sums_match_quests(si_frames: list) -> None:
    from quests.entropy import kernel_sum

    y, x = descriptors(si_frames[:10]), descriptors(si_frames[10:40])
    ref = kernel_sum(y, x, h=0.015)
    exact = kernel_sums(y, x, 0.015, precision="float64")
    fast = kernel_sums(y, x, 0.015, precision="float32")
    np.testing.assert_allclose(exact, ref, rtol=1e-9)
    np.testing.assert_allclose(np.log(fast), np.log(ref), atol=1e-3)
    assert kernel_sums(y, x[:0], 0.015).tolist() == [0.0] * len(y)


def test_delta_entropy_is_capped_not_infinite() -> None:
    dh = delta_entropy(np.array([0.0, 1e-300, 1.0, 4.0]))
    assert dh.tolist()[:2] == [DH_CAP, DH_CAP]
    np.testing.assert_allclose(dh[2:], [0.0, -np.log(4.0)])


def test_chunks_trade_exactness_for_fewer_refreshes(si_frames: list) -> None:
    # A is the most novel candidate and A2 its twin: exact greedy (chunk 1) never takes
    # both; a chunk of 2 takes the two best scores at once, twins included.
    ref = si_frames[:5]
    a = si_frames[0].copy()
    a.set_cell(a.cell.array * 1.08, scale_atoms=True)
    a2 = a.copy()
    a2.rattle(1e-4, seed=3)
    cands = [a, a2] + si_frames[1:4]  # the last three are in the reference: duplicates
    exact = entropy_select(cands, ref, 2, SelectSpec(chunk_size=1))
    chunked = entropy_select(cands, ref, 2, SelectSpec(chunk_size=2))
    assert len(set(exact.indices) & {0, 1}) == 1
    assert sorted(chunked.indices) == [0, 1]


def test_select_spec_rejects_bad_knobs() -> None:
    with pytest.raises(ValueError):
        SelectSpec(precision="float16")
    with pytest.raises(ValueError):
        SelectSpec(chunk_size=0)
    with pytest.raises(ValueError):
        SelectSpec(bandwidth=0.0)
