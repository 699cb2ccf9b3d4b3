"""Energy, force and stress parity and error histograms of a model on a labelled dataset."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.units import GPa

from pfd import frames as fr
from pfd.metrics import predict
from pfd.validate._plot import colour, png, pyplot
from pfd.validate.record import Record


@dataclass(frozen=True)
class ParityResult(Record):
    dataset: str
    n_frames: int
    energy_rmse_meV_atom: float
    force_rmse_eV_A: float
    stress_rmse_GPa: float | None
    e_ref_eV_atom: list[float]
    e_pred_eV_atom: list[float]
    f_ref_eV_A: list[float]
    f_pred_eV_A: list[float]
    s_ref_GPa: list[float]
    s_pred_GPa: list[float]

    def summary(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("dataset", "n_frames", "energy_rmse_meV_atom",
                                              "force_rmse_eV_A", "stress_rmse_GPa")}


def subsample(frames: Sequence[Atoms], n: int) -> list[Atoms]:
    """Evenly spaced, deterministic: the same frames every rerun."""
    if len(frames) <= n:
        return list(frames)
    return [frames[int(i * len(frames) / n)] for i in range(n)]


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2))) if a.size else float("nan")


def parity(frames: Sequence[Atoms], calc: Calculator, dataset: str) -> ParityResult:
    """``calc``'s predictions against the labels carried by ``frames``."""
    frames = [a for a in frames if fr.has_labels(a)]
    pred = predict(calc, frames)
    e_ref = np.array([fr.energy(a) / len(a) for a in frames])
    e_pred = np.array([fr.energy(a) / len(a) for a in pred])
    f_ref = np.concatenate([fr.forces(a).ravel() for a in frames]) if frames else np.zeros(0)
    f_pred = np.concatenate([fr.forces(a).ravel() for a in pred]) if frames else np.zeros(0)
    s_ref, s_pred = [], []
    for r, p in zip(frames, pred, strict=True):
        sr, sp = fr.stress(r), fr.stress(p)
        if sr is not None and sp is not None:
            s_ref.append(np.asarray(sr) / GPa)
            s_pred.append(np.asarray(sp) / GPa)
    sr_a = np.concatenate(s_ref) if s_ref else np.zeros(0)
    sp_a = np.concatenate(s_pred) if s_pred else np.zeros(0)
    return ParityResult(
        dataset=dataset, n_frames=len(frames),
        energy_rmse_meV_atom=1000 * _rmse(e_pred, e_ref), force_rmse_eV_A=_rmse(f_pred, f_ref),
        stress_rmse_GPa=_rmse(sp_a, sr_a) if sr_a.size else None,
        e_ref_eV_atom=e_ref.tolist(), e_pred_eV_atom=e_pred.tolist(),
        f_ref_eV_A=f_ref.tolist(), f_pred_eV_A=f_pred.tolist(),
        s_ref_GPa=sr_a.tolist(), s_pred_GPa=sp_a.tolist())


def plot(results: dict[str, ParityResult], title: str) -> bytes:
    """Top row: parity for energy, forces, stress; bottom row: error histograms."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(12, 7), dpi=100)
    panels = [("energy (eV/atom)", "e_ref_eV_atom", "e_pred_eV_atom", 1000.0, "meV/atom"),
              ("force component (eV/Å)", "f_ref_eV_A", "f_pred_eV_A", 1.0, "eV/Å"),
              ("stress component (GPa)", "s_ref_GPa", "s_pred_GPa", 1.0, "GPa")]
    for col, (what, ref_k, pred_k, scale, unit) in enumerate(panels):
        ax, hx = axes[0, col], axes[1, col]
        lo, hi = np.inf, -np.inf
        for name, r in results.items():
            ref, pred = np.asarray(getattr(r, ref_k)), np.asarray(getattr(r, pred_k))
            if ref.size == 0:
                continue
            err = (pred - ref) * scale
            rmse = float(np.sqrt(np.mean(err**2)))
            ax.scatter(ref, pred, s=4, alpha=0.5, color=colour(name),
                       label=f"{name} (RMSE {rmse:.3g} {unit})")
            hx.hist(err, bins=50, alpha=0.5, color=colour(name), label=name)
            lo, hi = min(lo, ref.min(), pred.min()), max(hi, ref.max(), pred.max())
        if np.isfinite(lo):
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.legend(fontsize=7, loc="upper left")
            hx.legend(fontsize=7)
        ax.set_xlabel(f"reference {what}")
        ax.set_ylabel(f"model {what}")
        hx.set_xlabel(f"error ({unit})")
        hx.set_ylabel("count")
    fig.suptitle(title)
    return png(fig)
