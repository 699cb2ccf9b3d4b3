"""The polymorph builders make the phases they name: space group (spglib, independent of
the builder), atom count, bonds, and a one-line error for a shape a crystal does not have."""

from __future__ import annotations

import math

import numpy as np
import pytest
import spglib
from ase.neighborlist import neighbor_list
from pydantic import ValidationError

from pfd.config import CRYSTALS_WITH_C, CRYSTALS_WITH_INTERNAL, BuildSpec
from pfd.crystals import HEXAGONAL_BULK, POLYMORPHS, build_crystal
from pfd.structures import build_structure


def _spacegroup(atoms) -> int:
    cell = (atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers)
    return int(spglib.get_symmetry_dataset(cell, symprec=1e-4).number)


def _shells(atoms, cutoff: float) -> np.ndarray:
    """Distances of atom 0's neighbours, sorted."""
    i, d = neighbor_list("id", atoms, cutoff)
    return np.sort(d[i == 0])


@pytest.mark.parametrize(("name", "a", "group", "n_conv", "n_prim"), [
    ("hexagonal-diamond", 3.84, 194, 4, 4),
    ("beta-sn", 4.81, 141, 4, 2),
    ("bc8", 6.636, 206, 16, 8),
    ("diamond", 5.43, 227, 8, 2),
    ("hcp", 2.72, 194, 2, 2),
])
def test_each_phase_has_its_space_group_and_cell(name, a, group, n_conv, n_prim):
    conv = build_crystal("Si", name, a)
    prim = build_crystal("Si", name, a, conventional=False)
    assert (len(conv), len(prim)) == (n_conv, n_prim)
    assert _spacegroup(conv) == group and _spacegroup(prim) == group
    # the primitive cell is the same crystal: same volume per atom, same first shell
    assert conv.get_volume() / len(conv) == pytest.approx(prim.get_volume() / len(prim))
    np.testing.assert_allclose(_shells(conv, 3.0), _shells(prim, 3.0), atol=1e-8)


def test_ideal_hexagonal_diamond_has_diamonds_bonds():
    """With a = a_diamond/sqrt(2), ideal c/a and u, every atom has four bonds of diamond's
    length (a_d sqrt(3)/4) and twelve second neighbours at diamond's a_d/sqrt(2); the
    eclipsed neighbour along c at 5/3 of a bond is what cubic diamond does not have."""
    a_d = 5.43
    bond = a_d * math.sqrt(3) / 4
    hexd = build_crystal("Si", "hexagonal-diamond", a_d / math.sqrt(2))
    d = _shells(hexd, 4.2)
    np.testing.assert_allclose(d[:4], bond, rtol=1e-9)
    np.testing.assert_allclose(d[4:16], a_d / math.sqrt(2), rtol=1e-9)
    np.testing.assert_allclose(d[16:], 5 / 3 * bond, rtol=1e-9)
    assert len(d) == 17
    cubic = _shells(build_crystal("Si", "diamond", a_d), 4.2)
    assert len(cubic) == 16


def test_bc8_has_one_short_and_three_long_bonds_and_beta_tin_four_plus_two():
    d = _shells(build_crystal("Si", "bc8", 6.636), 2.6)
    assert len(d) == 4 and d[0] < d[1] - 0.05
    np.testing.assert_allclose(d[1:], d[1], rtol=1e-9)
    assert d[0] == pytest.approx(2.31, abs=0.02) and d[1] == pytest.approx(2.39, abs=0.02)
    d = _shells(build_crystal("Si", "beta-sn", 4.81), 2.8)
    assert len(d) == 6
    np.testing.assert_allclose(d[:4], d[0], rtol=1e-9)
    np.testing.assert_allclose(d[4:], d[4], rtol=1e-9)
    # the two apical neighbours are at c (0.552 a by default), the four at a/2·sqrt(1+...)
    assert d[4] - d[0] > 0.1


def test_shape_parameters_change_the_cell():
    c = build_crystal("Si", "beta-sn", 4.81, c=2.80)
    assert c.cell.cellpar()[2] == pytest.approx(2.80)
    bc8 = build_crystal("Si", "bc8", 6.636, internal=0.11)
    assert _shells(bc8, 2.6)[0] != pytest.approx(_shells(build_crystal("Si", "bc8", 6.636),
                                                          2.6)[0])


def test_config_builds_a_polymorph_with_its_vacancy():
    atoms = build_structure(BuildSpec(element="Si", crystal="bc8", a_A=6.636, cubic=False,
                                      vacancies=1))
    assert len(atoms) == 7


def test_the_schema_knows_which_crystals_have_free_shapes():
    assert set(CRYSTALS_WITH_C) == set(HEXAGONAL_BULK) | {
        n for n, p in POLYMORPHS.items() if p.c_over_a is not None}
    assert set(CRYSTALS_WITH_INTERNAL) == {n for n, p in POLYMORPHS.items()
                                           if p.internal is not None}


@pytest.mark.parametrize(("fields", "message"), [
    ({"crystal": "diamond", "c_A": 3.0}, "c_A is for hcp, hexagonal-diamond, beta-sn, not"),
    ({"crystal": "beta-sn", "internal": 0.1}, "internal is for hexagonal-diamond, bc8, not"),
])
def test_a_shape_the_crystal_does_not_have_is_named(fields, message):
    with pytest.raises(ValidationError, match=message):
        BuildSpec(element="Si", a_A=5.0, **fields)
