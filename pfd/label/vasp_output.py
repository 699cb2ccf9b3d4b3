"""Energy, forces and stress from ``vasprun.xml``, for the geometry we sent.

The label is the first ionic step: the one computed at the input POSCAR (a static run has
only that one). Its structure is compared with the frame, so outputs left over from
another run can never be attached to this frame; its SCF must have converged (fewer
electronic steps than NELM).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.units import GPa

from pfd.frames import attach_labels
from pfd.label.base import LabelError


def parse_vasprun(path: Path, atoms: Atoms) -> tuple[Atoms, str]:
    """``atoms`` (in POSCAR order) labelled from ``path``; also VASP's version string.

    Energy is the free energy ``e_fr_energy`` (what the forces are derivatives of);
    stress goes from VASP's kBar (compression positive) to ASE's sign in eV/Å³.
    """
    from pymatgen.io.vasp.outputs import Vasprun

    try:
        vr = Vasprun(str(path), parse_dos=False, parse_eigen=False,
                     parse_projected_eigen=False, parse_potcar_file=False,
                     exception_on_bad_xml=True)
    except Exception as err:  # a truncated or foreign file raises many types
        raise LabelError(f"cannot read {path.name}: {type(err).__name__}: {err}") from None
    if not vr.ionic_steps:
        raise LabelError(f"{path.name} has no ionic step")
    step = vr.ionic_steps[0]
    nelm = int(vr.parameters.get("NELM", 60))
    if len(step.get("electronic_steps", [])) >= nelm:
        raise LabelError(f"VASP SCF not converged in NELM={nelm} steps: never a label",
                         permanent=True)
    s = step["structure"]
    if [sp.symbol for sp in s.species] != atoms.get_chemical_symbols():
        raise LabelError(f"{path.name} is for another composition/order of atoms")
    frac = s.frac_coords - atoms.get_scaled_positions(wrap=False)
    frac -= np.round(frac)
    if (np.abs(s.lattice.matrix - atoms.cell.array).max() > 1e-4
            or np.abs(frac @ atoms.cell.array).max() > 1e-4):
        raise LabelError(f"{path.name} was computed for a different geometry: refusing it")
    energy = float(step["e_fr_energy"])
    forces = np.asarray(step["forces"], dtype=float)
    stress = -np.asarray(step["stress"], dtype=float) * 0.1 * GPa
    if forces.shape != (len(atoms), 3) or stress.shape != (3, 3):
        raise LabelError(f"{path.name} lacks forces or stress (ISIF/IBRION changed?)")
    if not (np.isfinite(energy) and np.all(np.isfinite(forces)) and np.all(np.isfinite(stress))):
        raise LabelError("VASP returned non-finite energy/forces/stress")
    return attach_labels(atoms, energy, forces, stress), str(vr.vasp_version).strip()


def diagnose(directory: Path) -> tuple[str, bool]:
    """What VASP's outputs say went wrong, and whether a rerun could change it."""
    from pymatgen.io.vasp.outputs import Vasprun

    vr_path = directory / "vasprun.xml"
    if vr_path.is_file():
        try:
            vr = Vasprun(str(vr_path), parse_dos=False, parse_eigen=False,
                         parse_projected_eigen=False, parse_potcar_file=False)
            if not vr.converged_electronic:
                return "SCF not converged", True
        except Exception:  # noqa: BLE001 - a broken vasprun.xml is itself the diagnosis
            return "vasprun.xml unreadable (truncated?)", False
    out = directory / "vasp.out"
    text = out.read_text(errors="replace") if out.is_file() else ""
    for line in text.splitlines():
        if re.search(r"error|ERROR|internal", line):
            return line.strip()[:200], False
    return ("no output", False) if not text.strip() else ("", False)
