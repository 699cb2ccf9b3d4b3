"""Vacancy formation energy with relaxed positions: E_f = E(N−1) − (N−1)/N · E(N).

The cell is fixed (constant-volume formation energy, at the lattice the caller gives,
normally each model's own equilibrium); ions relax with ASE's BFGS. Small cells
overestimate the interaction between periodic vacancies, but model and DFT share the
cell, so the comparison is like for like.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.optimize import BFGS

from pfd.validate.record import Record


@dataclass(frozen=True)
class VacancyResult(Record):
    structure: str
    n_atoms_bulk: int
    a_A: float  # first cell vector of the bulk cell used (before the supercell)
    e_bulk_eV: float
    e_vacancy_unrelaxed_eV: float
    e_vacancy_relaxed_eV: float
    formation_unrelaxed_eV: float
    formation_eV: float
    relax_steps: int
    relax_converged: bool
    max_force_eV_A: float
    max_displacement_A: float


def make_vacancy(bulk: Atoms, site: int = 0) -> Atoms:
    if not 0 <= site < len(bulk):
        raise ValueError(f"vacancy site {site} not in a {len(bulk)}-atom cell")
    vac = bulk.copy()
    vac.calc = None
    del vac[site]
    return vac


def vacancy_formation(bulk: Atoms, calc: Calculator, structure: str,
                      supercell: tuple[int, int, int] = (1, 1, 1), fmax_eV_A: float = 0.05,
                      max_steps: int = 60, site: int = 0) -> VacancyResult:
    a_A = float(np.linalg.norm(bulk.cell[0]))
    cell = bulk.repeat(supercell)
    cell.calc = calc
    n = len(cell)
    e_bulk = float(cell.get_potential_energy())
    vac = make_vacancy(cell, site)
    start = vac.positions.copy()
    vac.calc = calc
    e_unrelaxed = float(vac.get_potential_energy())
    opt = BFGS(vac, logfile=None)
    converged = bool(opt.run(fmax=fmax_eV_A, steps=max_steps))
    e_relaxed = float(vac.get_potential_energy())
    fmax = float(np.linalg.norm(vac.get_forces(), axis=1).max())
    disp = vac.positions - start
    ref = (n - 1) / n * e_bulk
    return VacancyResult(
        structure=structure, n_atoms_bulk=n, a_A=a_A, e_bulk_eV=e_bulk,
        e_vacancy_unrelaxed_eV=e_unrelaxed, e_vacancy_relaxed_eV=e_relaxed,
        formation_unrelaxed_eV=e_unrelaxed - ref, formation_eV=e_relaxed - ref,
        relax_steps=int(opt.nsteps), relax_converged=converged, max_force_eV_A=fmax,
        max_displacement_A=float(np.linalg.norm(disp, axis=1).max()))
