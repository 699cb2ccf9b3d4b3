"""The one data path: labelled Atoms survive extxyz and hash stably."""

from __future__ import annotations

import numpy as np
from ase.build import bulk

from pfd import frames as fr


def _labelled(seed: int = 0):
    a = bulk("Si", "diamond", a=5.43, cubic=True)
    a.rattle(0.05, seed=seed)
    rng = np.random.default_rng(seed)
    return fr.attach_labels(a, -42.5 - seed, rng.normal(size=(8, 3)),
                            rng.normal(size=6) * 1e-3)


def test_extxyz_round_trip_keeps_labels_and_info() -> None:
    frames = [_labelled(0), _labelled(1)]
    frames[0].info["traj_id"] = "g0-diamond-0-300K"
    back = fr.from_extxyz(fr.to_extxyz(frames))
    assert len(back) == 2
    for a, b in zip(frames, back, strict=True):
        assert fr.energy(b) == fr.energy(a)
        np.testing.assert_allclose(fr.forces(b), fr.forces(a), atol=1e-9)
        np.testing.assert_allclose(fr.stress(b), fr.stress(a), atol=1e-12)
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-9)
    assert back[0].info["traj_id"] == "g0-diamond-0-300K"


def test_hash_survives_round_trip_and_ignores_labels() -> None:
    a = _labelled(0)
    b = fr.from_extxyz(fr.to_extxyz([a]))[0]
    assert fr.frame_hash(a) == fr.frame_hash(b) == fr.frame_hash(fr.strip_labels(a))
    c = a.copy()
    c.positions[0, 0] += 1e-4
    assert fr.frame_hash(c) != fr.frame_hash(a)
    d = a.copy()
    d.symbols[0] = "Ge"
    assert fr.frame_hash(d) != fr.frame_hash(a)


def test_stress_matrix_converted_to_voigt() -> None:
    a = bulk("Si")
    s = np.array([[1.0, 6.0, 5.0], [6.0, 2.0, 4.0], [5.0, 4.0, 3.0]])
    out = fr.attach_labels(a, 0.0, np.zeros((2, 3)), s)
    np.testing.assert_array_equal(fr.stress(out), [1, 2, 3, 4, 5, 6])


def test_empty_and_species() -> None:
    assert fr.from_extxyz(fr.to_extxyz([])) == []
    assert fr.species([bulk("Si"), bulk("NaCl", "rocksalt", a=5.6)]) == ["Cl", "Na", "Si"]
