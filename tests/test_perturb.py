from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from pfd import frames as fr
from pfd.perturb import perturb


def test_reproducible_and_bounded() -> None:
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    a = perturb([si], 5, 0.1, 0.03, "uniform", seed=7)
    b = perturb([si], 5, 0.1, 0.03, "uniform", seed=7)
    c = perturb([si], 5, 0.1, 0.03, "uniform", seed=8)
    assert len(a) == 6  # original + 5
    np.testing.assert_allclose(a[0].positions, si.positions)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.positions, y.positions)
        np.testing.assert_array_equal(x.cell.array, y.cell.array)
    assert not np.allclose(a[3].positions, c[3].positions)
    for p in a[1:]:
        strain = np.linalg.solve(si.cell.array, p.cell.array) - np.eye(3)
        assert np.abs(strain).max() <= 0.03 + 1e-12
        np.testing.assert_allclose(strain, strain.T, atol=1e-12)  # symmetric strain
        assert not np.allclose(p.cell.array, si.cell.array)
        # displacement from the strained ideal positions, minimum image
        ideal = si.get_scaled_positions() @ p.cell.array
        d = p.positions - ideal
        frac = np.linalg.solve(p.cell.array.T, d.T).T
        d = (frac - np.round(frac)) @ p.cell.array
        assert np.linalg.norm(d, axis=1).max() <= 0.1 + 1e-9
        assert np.linalg.norm(d, axis=1).max() > 0.0


def test_const_style_and_no_original() -> None:
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    out = perturb([si], 2, 0.2, 0.0, "const", seed=1, include_unperturbed=False)
    assert len(out) == 2
    for p in out:
        disp = p.positions - si.positions
        frac = np.linalg.solve(si.cell.array.T, disp.T).T
        disp = (frac - np.round(frac)) @ si.cell.array
        np.testing.assert_allclose(np.linalg.norm(disp, axis=1), 0.2, rtol=1e-9)


def test_defaults_reproduce_frames_from_before_the_new_options() -> None:
    """Label-cache hits of existing runs depend on the default random stream not moving."""
    from pfd.frames import frame_hash

    si = bulk("Si", "diamond", a=5.43, cubic=True)
    # hashes produced by the code before atom_fraction/supercell existed
    assert [frame_hash(a)[:16] for a in perturb([si], 2, 0.1, 0.03, "uniform", seed=7)] == [
        "28a3eae166b22850", "7ef8914fc6af0416", "1d90141e9add3946"]
    assert [frame_hash(a)[:16] for a in perturb([si], 1, 0.1, 0.03, "normal", seed=3)] == [
        "28a3eae166b22850", "35331790cad193b4"]


def test_atom_fraction_moves_only_that_many_atoms_reproducibly() -> None:
    si = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 1, 1))  # 16 atoms
    out = perturb([si], 6, 0.2, 0.0, "const", seed=11, include_unperturbed=False,
                  atom_fraction=0.25)
    again = perturb([si], 6, 0.2, 0.0, "const", seed=11, include_unperturbed=False,
                    atom_fraction=0.25)
    moved_sets = set()
    for p, q in zip(out, again, strict=True):
        np.testing.assert_array_equal(p.positions, q.positions)
        disp = p.positions - si.positions
        frac = np.linalg.solve(si.cell.array.T, disp.T).T
        disp = (frac - np.round(frac)) @ si.cell.array
        moved = np.flatnonzero(np.linalg.norm(disp, axis=1) > 1e-9)
        assert len(moved) == 4  # 25 % of 16
        np.testing.assert_allclose(np.linalg.norm(disp[moved], axis=1), 0.2, rtol=1e-9)
        moved_sets.add(tuple(moved))
    assert len(moved_sets) > 1  # a different subset per copy
    # a tiny fraction still moves one atom
    one = perturb([si], 1, 0.2, 0.0, "const", seed=1, include_unperturbed=False,
                  atom_fraction=0.01)[0]
    assert np.sum(np.linalg.norm(one.positions - si.positions, axis=1) > 1e-9) == 1


def test_supercell_applies_to_reference_and_copies() -> None:
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    out = perturb([si], 2, 0.1, 0.02, "uniform", seed=2, supercell=(2, 1, 3))
    assert [len(a) for a in out] == [48, 48, 48]
    np.testing.assert_allclose(out[0].cell.lengths(), [10.86, 5.43, 16.29])
    for p in out[1:]:
        strain = np.linalg.solve(out[0].cell.array, p.cell.array) - np.eye(3)
        assert 0 < np.abs(strain).max() <= 0.02 + 1e-12
    with pytest.raises(ValueError, match="supercell"):
        perturb([si], 1, 0.1, 0.0, supercell=(0, 1, 1))


def test_init_set_has_strained_copies_at_the_configured_volumes() -> None:
    from configs import base

    from pfd.config import PFDConfig
    from pfd.steps import initial_frames
    from pfd.structures import load_structures

    cfg = PFDConfig.model_validate(base())
    frames = initial_frames(cfg)
    ideal = load_structures(cfg)["d"][0]
    v0 = ideal.get_volume()
    strained = [a for a in frames if "volume_ratio" in a.info]
    assert [a.info["volume_ratio"] for a in strained] == cfg.init.volume_ratios
    for a in strained:
        assert a.get_volume() == pytest.approx(a.info["volume_ratio"] * v0, rel=1e-9)
    # every atom rattled a little, none far: these are E(V) points, not MD frames

    for a in strained:
        ref = ideal.copy()
        ref.set_cell(a.cell, scale_atoms=True)
        d = np.linalg.norm(a.positions - ref.positions, axis=1)
        assert 0 < d.max() < 6 * cfg.init.volume_rattle_A
    assert [fr.frame_hash(a) for a in initial_frames(cfg)] == [fr.frame_hash(a) for a in frames]
    off = PFDConfig.model_validate({**base(), "init": {"structures": ["d"], "volume_ratios": []}})
    assert len(initial_frames(off)) == len(frames) - len(cfg.init.volume_ratios)
