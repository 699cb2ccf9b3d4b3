"""Energy, forces and stress from a CP2K ``ENERGY_FORCE`` output, read by us.

dpdata's ``cp2k/output`` reader finds no stress in CP2K 2023 output, and ASE's CP2K
calculator accepts an unconverged SCF; this parser refuses anything but a finished run
whose SCF converged, and checks the echoed coordinates against the frame so a label can
never be attached to atoms in a different order.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.units import Bohr, GPa, Hartree

from pfd.frames import attach_labels
from pfd.label.base import LabelError

_ENERGY = re.compile(r"ENERGY\| Total FORCE_EVAL \( QS \) energy \[a\.u\.\]:\s+(\S+)")
_STRESS_ROW = re.compile(r"^ STRESS\|\s+([xyz])\s+(\S+)\s+(\S+)\s+(\S+)\s*$", re.MULTILINE)


def cp2k_version(text: str) -> str:
    m = re.search(r"CP2K\| version string:\s+CP2K version\s+(\S+)", text)
    return m.group(1) if m else "unknown"


def _block_after(text: str, header: str) -> list[str]:
    i = text.rfind(header)
    if i < 0:
        return []
    return text[i + len(header):].splitlines()


def _echoed_positions(text: str) -> np.ndarray | None:
    lines = _block_after(text, "ATOMIC COORDINATES IN ANGSTROM")
    rows = []
    for line in lines[3:]:
        parts = line.split()
        if len(parts) < 7:
            break
        rows.append([float(v) for v in parts[4:7]])
    return np.array(rows) if rows else None


def parse_cp2k_output(path: Path, atoms: Atoms) -> Atoms:
    """The frame with CP2K's labels: eV, eV/Å, and ASE-sign stress in eV/Å³."""
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise LabelError(f"CP2K output missing: {err}") from None
    if "PROGRAM ENDED AT" not in text:
        raise LabelError("CP2K output is incomplete (no 'PROGRAM ENDED AT')")
    if "SCF run NOT converged" in text or "SCF run converged" not in text:
        raise LabelError("CP2K SCF not converged: never a label", permanent=True)
    n = len(atoms)
    echoed = _echoed_positions(text)
    if echoed is None or echoed.shape != (n, 3):
        raise LabelError("CP2K output does not echo the frame's coordinates")
    delta = echoed - atoms.positions
    if atoms.cell.rank == 3:  # CP2K may echo wrapped positions: compare modulo the cell
        frac = atoms.cell.scaled_positions(delta)
        delta = atoms.cell.cartesian_positions(frac - np.round(frac))
    if np.abs(delta).max() > 1e-4:
        raise LabelError("CP2K ran on coordinates that differ from the frame "
                         f"(max {np.abs(delta).max():.2e} Å): refusing to attach labels")
    energies = _ENERGY.findall(text)
    if not energies:
        raise LabelError("CP2K output has no total FORCE_EVAL energy")
    energy = float(energies[-1]) * Hartree
    flines = _block_after(text, "ATOMIC FORCES in [a.u.]")
    rows = [ln.split() for ln in flines[1:] if ln.strip()][1:n + 1]
    symbols = atoms.get_chemical_symbols()
    if len(rows) != n or any(r[2] != symbols[i] for i, r in enumerate(rows)):
        raise LabelError("CP2K forces block does not match the frame's atoms")
    forces = np.array([[float(v) for v in r[3:6]] for r in rows]) * Hartree / Bohr
    i = text.rfind("STRESS| Analytical stress tensor [GPa]")
    if i < 0:
        raise LabelError("CP2K output has no analytical stress tensor (STRESS_TENSOR lost?)")
    found = _STRESS_ROW.findall(text[i:])[:3]
    if [r[0] for r in found] != ["x", "y", "z"]:
        raise LabelError("cannot read CP2K's stress tensor block")
    sigma = np.array([[float(v) for v in r[1:]] for r in found])
    stress = -sigma * GPa  # CP2K prints pressure-like (compression positive)
    if not (np.isfinite(energy) and np.all(np.isfinite(forces)) and np.all(np.isfinite(stress))):
        raise LabelError("CP2K returned non-finite energy/forces/stress")
    return attach_labels(atoms, energy, forces, stress)


def diagnose(directory: Path, output_file: str = "cp2k.out") -> tuple[str, bool]:
    """What CP2K said went wrong, and whether running it again could change that."""
    try:
        text = (directory / output_file).read_text(errors="replace")
    except OSError:
        return "no output", False
    if "SCF run NOT converged" in text:
        return "SCF not converged", True
    i = text.find("[ABORT]")
    if i >= 0:
        msg_lines = []
        for line in text[i + len("[ABORT]"):].splitlines()[1:8]:
            body = line.strip().strip("*").strip().lstrip("\\_/| ").strip()
            if set(line.strip()) <= {"*"}:
                break
            if body:
                msg_lines.append(body)
        return "CP2K abort: " + " ".join(msg_lines), True
    if not text.strip():
        return "no output", False
    return "", False
