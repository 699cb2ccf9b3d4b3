"""pfd.label.noise: two labellings of the same frames compared as a stage's floor."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from pfd.config import LabellerSpec
from pfd.label.noise import label_differences, summary, with_kspacing


def _labelled(a: Atoms, energy: float, forces: np.ndarray) -> Atoms:
    b = a.copy()
    b.calc = SinglePointCalculator(b, energy=energy, forces=forces)
    return b


def test_a_constant_shift_is_no_error_and_force_differences_are_per_frame() -> None:
    rng = np.random.default_rng(0)
    frames = [bulk("Si", cubic=True) for _ in range(3)]
    for a in frames:
        a.rattle(0.05, rng=rng)
    f = [rng.normal(size=(8, 3)) for _ in frames]
    fine = [_labelled(a, -100.0 - i, f[i]) for i, a in enumerate(frames)]
    # every frame shifted by 8 meV/atom, frame 2 moved by another +16 meV/atom; forces
    # of frame 1 off by 0.1 eV/Å in every component
    coarse = [_labelled(a, -100.0 - i + 8 * 0.008 + (0.128 if i == 2 else 0.0),
                        f[i] + (0.1 if i == 1 else 0.0)) for i, a in enumerate(frames)]
    d = label_differences(coarse, fine)
    e = [x.energy_meV_atom for x in d]
    assert e == pytest.approx([-16 / 3, -16 / 3, 32 / 3])
    assert [x.force_rmse_eV_A for x in d] == pytest.approx([0.0, 0.1, 0.0], abs=1e-12)
    s = summary(d)
    assert s["force_rmse_max_eV_A"] == pytest.approx(0.1)
    assert s["energy_max_meV_atom"] == pytest.approx(32 / 3)


def test_different_configurations_are_refused() -> None:
    a, b = bulk("Si", cubic=True), bulk("Si", cubic=True)
    b.positions[0] += 0.1
    z = np.zeros((8, 3))
    with pytest.raises(ValueError, match="frame 0 is not the same configuration"):
        label_differences([_labelled(a, 0.0, z)], [_labelled(b, 0.0, z)])


def test_with_kspacing_changes_the_engine_in_use_only() -> None:
    spec = LabellerSpec.model_validate({"engine": "cp2k"})
    out = with_kspacing(spec, 0.2)
    assert out.cp2k.kspacing_invA == 0.2 and out.qe.kspacing_invA == spec.qe.kspacing_invA
