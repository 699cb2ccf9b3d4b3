"""Vacancy formation energy with relaxed positions: E_f = E(N−1) − (N−1)/N · E(N).

The cell is fixed (constant-volume formation energy, at the lattice the caller gives,
normally each model's own equilibrium); ions relax with ASE's BFGS. Small cells
overestimate the interaction between periodic vacancies, but model and DFT share the
cell, so the comparison is like for like.

The uncertainty of E_f is an estimate of the energy the relaxation had still to gain
when it stopped: the larger of ½ fᵀH⁻¹f (the optimiser's own Hessian; BFGS starts stiff,
so early on this alone underestimates by up to ~10×, measured on EMT Cu) and the last
step's energy change. It is an order of magnitude, not a standard error: a converged
relaxation to 0.01 eV/Å leaves ~1e-4 eV, one stopped by ``max_steps`` can leave tenths.
:func:`problems` names a result that is not a vacancy formation energy.
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
    formation_err_eV: float = float("nan")  # energy left to relax (see module docstring)
    nn_distance_A: float = float("nan")  # nearest-neighbour distance of the bulk cell


#: an atom that moved more than this fraction of the nearest-neighbour distance has
#: hopped (into the vacancy) or the cell reconstructed: not the relaxed vacancy any more
MAX_DISPLACEMENT_NN_FRACTION = 0.5


def problems(r: VacancyResult) -> list[str]:
    """Why this result is not a meaningful vacancy formation energy; empty if none."""
    out = []
    if not r.relax_converged:
        out.append(f"the relaxation stopped after {r.relax_steps} steps at max |F| = "
                   f"{r.max_force_eV_A:.3f} eV/Å, not converged (raise max_steps)")
    if r.formation_eV <= 0:
        out.append(f"E_f = {r.formation_eV:.3f} eV is not positive: removing an atom lowers "
                   "the energy, so the bulk is not this model's stable state")
    if np.isfinite(r.nn_distance_A) and \
            r.max_displacement_A > MAX_DISPLACEMENT_NN_FRACTION * r.nn_distance_A:
        out.append(f"an atom moved {r.max_displacement_A:.2f} Å (nearest-neighbour distance "
                   f"{r.nn_distance_A:.2f} Å): it hopped or the cell reconstructed")
    return out


def remaining_energy(forces: np.ndarray, hessian: np.ndarray | None,
                     alpha: float = 70.0) -> float:
    """½ fᵀH⁻¹f: the energy a quadratic model of the surface says is left to gain.

    ``hessian`` is the optimiser's estimate (ASE's BFGS ``H``), None before its first
    update, when BFGS itself uses ``alpha`` × identity.
    """
    f = np.asarray(forces, float).ravel()
    h = np.eye(f.size) * alpha if hessian is None else np.asarray(hessian, float)
    try:
        x = np.linalg.solve(h, f)
    except np.linalg.LinAlgError:
        return float("nan")
    return float(max(0.0, 0.5 * f @ x))


def nearest_neighbour_distance(atoms: Atoms) -> float:
    from ase.neighborlist import neighbor_list

    d = neighbor_list("d", atoms, 4.0)
    return float(d.min()) if d.size else float("nan")


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
    energies: list[float] = []  # after each step: forces are in hand, so energy is free
    opt.attach(lambda: energies.append(float(vac.get_potential_energy())))
    converged = bool(opt.run(fmax=fmax_eV_A, steps=max_steps))
    e_relaxed = float(vac.get_potential_energy())
    forces = vac.get_forces()
    fmax = float(np.linalg.norm(forces, axis=1).max())
    last_step = abs(energies[-2] - energies[-1]) if len(energies) >= 2 else 0.0
    remaining = max(last_step, remaining_energy(forces, getattr(opt, "H", None),
                                                float(getattr(opt, "alpha", 70.0))))
    disp = vac.positions - start
    ref = (n - 1) / n * e_bulk
    return VacancyResult(
        structure=structure, n_atoms_bulk=n, a_A=a_A, e_bulk_eV=e_bulk,
        e_vacancy_unrelaxed_eV=e_unrelaxed, e_vacancy_relaxed_eV=e_relaxed,
        formation_unrelaxed_eV=e_unrelaxed - ref, formation_eV=e_relaxed - ref,
        relax_steps=int(opt.nsteps), relax_converged=converged, max_force_eV_A=fmax,
        max_displacement_A=float(np.linalg.norm(disp, axis=1).max()),
        formation_err_eV=remaining, nn_distance_A=nearest_neighbour_distance(cell))
