"""Errors of a model against labelled frames, and the stage convergence decision.

Conventions match ``dp test``: energy error per atom, force RMSE over all Cartesian
components of all atoms, stress RMSE over Voigt components (only frames that have it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from pfd.frames import energy, forces, stress

if TYPE_CHECKING:
    from pfd.config import ConvergeSpec


@dataclass
class Metrics:
    n_frames: int
    energy_rmse_meV_atom: float
    energy_mae_meV_atom: float
    force_rmse_eV_A: float
    force_mae_eV_A: float
    stress_rmse_GPa: float | None
    per_frame: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("per_frame")
        return d


@dataclass
class Predictions:
    """Reference and predicted values, kept for parity plots."""

    e_ref_per_atom: list[float] = field(default_factory=list)
    e_pred_per_atom: list[float] = field(default_factory=list)
    f_ref: list[float] = field(default_factory=list)
    f_pred: list[float] = field(default_factory=list)


def predict(calc: Calculator, frames: list[Atoms]) -> list[Atoms]:
    """Evaluate ``calc`` on each frame; returns label-carrying copies (the predictions)."""
    from pfd.frames import attach_labels

    out = []
    for a in frames:
        w = a.copy()
        w.calc = calc
        try:
            s = w.get_stress()
        except Exception:  # calculators without stress: predictions still useful
            s = None
        out.append(attach_labels(a, w.get_potential_energy(), w.get_forces(), s))
    return out


def compare(reference: list[Atoms], predicted: list[Atoms]) -> tuple[Metrics, Predictions]:
    if len(reference) != len(predicted):
        raise ValueError(f"{len(reference)} reference frames vs {len(predicted)} predictions")
    if not reference:
        nan = math.nan
        return Metrics(0, nan, nan, nan, nan, None), Predictions()
    de, f_ref, f_pred, ds = [], [], [], []
    per_frame = []
    pr = Predictions()
    for r, p in zip(reference, predicted, strict=True):
        n = len(r)
        er, ep = energy(r) / n, energy(p) / n
        fr, fp = forces(r), forces(p)
        de.append(ep - er)
        f_ref.append(fr.ravel())
        f_pred.append(fp.ravel())
        sr, sp = stress(r), stress(p)
        if sr is not None and sp is not None:
            ds.append(sp - sr)
        per_frame.append({"energy_err_meV_atom": 1000 * (ep - er),
                          "force_rmse_eV_A": float(np.sqrt(np.mean((fp - fr) ** 2)))})
        pr.e_ref_per_atom.append(er)
        pr.e_pred_per_atom.append(ep)
    de_a = np.array(de)
    fr_a, fp_a = np.concatenate(f_ref), np.concatenate(f_pred)
    pr.f_ref, pr.f_pred = fr_a.tolist(), fp_a.tolist()
    s_rmse = None
    if ds:
        from ase.units import GPa

        s_rmse = float(np.sqrt(np.mean(np.concatenate(ds) ** 2)) / GPa)
    m = Metrics(
        n_frames=len(reference),
        energy_rmse_meV_atom=float(1000 * np.sqrt(np.mean(de_a**2))),
        energy_mae_meV_atom=float(1000 * np.mean(np.abs(de_a))),
        force_rmse_eV_A=float(np.sqrt(np.mean((fp_a - fr_a) ** 2))),
        force_mae_eV_A=float(np.mean(np.abs(fp_a - fr_a))),
        stress_rmse_GPa=s_rmse,
        per_frame=per_frame,
    )
    return m, pr


def evaluate(calc: Calculator, frames: list[Atoms]) -> tuple[Metrics, Predictions]:
    return compare(frames, predict(calc, frames))


def good_frame_count(per_frame: list[dict[str, float]],
                     max_energy_error_meV_atom: float | None,
                     max_force_rmse_eV_A: float | None) -> int:
    """Number of frames whose |energy error| and force RMSE are both below the limits.

    Strict ``<`` as in the paper ("error < e"); a limit of None is not checked.
    """
    if not per_frame:
        raise ValueError("the frame-ratio rule needs per-frame errors (Metrics.per_frame is "
                         "empty; rebuild Metrics with the test record's 'per_frame')")
    good = 0
    for f in per_frame:
        ok = True
        if max_energy_error_meV_atom is not None:
            ok &= abs(f["energy_err_meV_atom"]) < max_energy_error_meV_atom
        if max_force_rmse_eV_A is not None:
            ok &= f["force_rmse_eV_A"] < max_force_rmse_eV_A
        good += bool(ok)
    return good


def convergence_checks(m: Metrics, spec: ConvergeSpec) -> dict[str, dict[str, float | bool]]:
    """Each configured criterion with its value, threshold and verdict, for the records."""
    checks: dict[str, dict[str, float | bool]] = {}
    if spec.force_rmse_eV_A is not None:
        checks["force_rmse_eV_A"] = {"value": m.force_rmse_eV_A,
                                     "threshold": spec.force_rmse_eV_A,
                                     "ok": m.force_rmse_eV_A < spec.force_rmse_eV_A}
    if spec.energy_rmse_meV_atom is not None:
        checks["energy_rmse_meV_atom"] = {
            "value": m.energy_rmse_meV_atom, "threshold": spec.energy_rmse_meV_atom,
            "ok": m.energy_rmse_meV_atom < spec.energy_rmse_meV_atom}
    if spec.frame_ratio is not None:
        rule = spec.frame_ratio
        good = good_frame_count(m.per_frame, rule.max_energy_error_meV_atom,
                                rule.max_force_rmse_eV_A)
        n = len(m.per_frame)
        # "at least X %" on counts, with a hair of slack so 4 of 5 meets 0.8 in floats
        checks["frame_ratio"] = {"value": good / n, "threshold": rule.min_fraction,
                                 "ok": good >= rule.min_fraction * n - 1e-9}
    return checks


def converged(m: Metrics, spec: ConvergeSpec) -> bool:
    """All configured criteria must hold; an empty test set never counts as converged."""
    if m.n_frames == 0:
        return False
    return all(c["ok"] for c in convergence_checks(m, spec).values())
