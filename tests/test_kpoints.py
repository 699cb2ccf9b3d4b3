"""One k-point mesh rule for every DFT labeller, and it honours ``pbc``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk, fcc111

from pfd.config import QESpec
from pfd.label import cp2k_inputs, qe
from pfd.label.base import LabelError
from pfd.label.kpoints import kpoint_mesh
from pfd.label.qe import QELabeller


def test_periodic_mesh_follows_the_spacing() -> None:
    si = bulk("Si", "diamond", a=5.43, cubic=True)  # |b_i| 2π = 2π/5.43 ≈ 1.157 Å⁻¹
    assert kpoint_mesh(si, 0.25) == (5, 5, 5)
    assert kpoint_mesh(si, 2.0) == (1, 1, 1)  # never fewer than one
    assert kpoint_mesh(si.repeat((2, 1, 1)), 0.25) == (3, 5, 5)


def test_non_periodic_direction_gets_one_kpoint() -> None:
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
    assert list(slab.pbc) == [True, True, False]
    n = kpoint_mesh(slab, 0.2)
    assert n[2] == 1 and n[0] > 1 and n[1] > 1
    wire = bulk("Si", "diamond", a=5.43, cubic=True)
    wire.pbc = [False, False, True]
    assert kpoint_mesh(wire, 0.25) == (1, 1, 5)
    # the cell is the same; only pbc changed the answer
    wire.pbc = True
    assert kpoint_mesh(wire, 0.25) == (5, 5, 5)


def test_qe_and_cp2k_use_the_one_rule() -> None:
    assert qe.kpoint_mesh is kpoint_mesh
    assert cp2k_inputs.kpoint_mesh is kpoint_mesh


def test_qe_input_has_one_kpoint_along_the_vacuum(tmp_path: Path) -> None:
    """pw.x itself is not needed: the input is written before the (failing) engine runs."""
    (tmp_path / "Cu.UPF").write_text("not read: the engine is `true`")
    spec = QESpec(pseudo_dir=str(tmp_path), pseudopotentials={"Cu": "Cu.UPF"}, command="true",
                  kspacing_invA=0.3, max_corrections=0)
    slab = fcc111("Cu", size=(1, 1, 3), vacuum=6.0)
    # periodic along c, this cell would get 2 k-points there
    assert kpoint_mesh(slab.copy(), 0.3)[2] == 1
    assert np.ceil(np.linalg.norm(slab.cell.reciprocal()[2]) * 2 * np.pi / 0.3) == 2
    with pytest.raises(LabelError):
        QELabeller(spec, ("Cu",)).label(slab, tmp_path / "w")
    lines = (tmp_path / "w" / "pw.in").read_text().splitlines()
    mesh = lines[lines.index("K_POINTS automatic") + 1].split()[:3]
    assert mesh == [str(n) for n in kpoint_mesh(slab, 0.3)] and mesh[2] == "1"
