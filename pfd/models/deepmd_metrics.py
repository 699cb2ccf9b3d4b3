"""``dp test``'s error figures computed on pfd frames with any ASE calculator.

DeePMD users compare models by the numbers ``dp test`` prints: energy RMSE (eV and
eV/atom), force RMSE (eV/Å) and virial RMSE (eV and eV/atom). Reporting the same
figures, with the same conventions, makes pfd's students comparable with published
DeePMD models; computing them through the ASE calculator (instead of ``dp test`` on
deepmd/npy files) works for every backend, teachers included, and keeps frames the
only data path. ``tests/test_deepmd_student_md.py`` checks the numbers against
``dp --pt test`` itself.

Conventions (deepmd ``infer/model_test/ener.py``): every RMSE is over all elements of
all frames (the energy: one per frame; per atom: the frame's error divided by its atom
count; forces: every Cartesian component; virial: the nine components of
``-stress * volume``, only for periodic frames whose reference has stress).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from pfd import frames as fr
from pfd.metrics import predict


@dataclass
class DPTestMetrics:
    n_frames: int
    energy_rmse_eV: float
    energy_rmse_per_atom_eV: float
    energy_mae_per_atom_eV: float
    force_rmse_eV_A: float
    force_mae_eV_A: float
    virial_rmse_eV: float | None
    virial_rmse_per_atom_eV: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def _virial(atoms: Atoms, stress: np.ndarray) -> np.ndarray:
    s = np.asarray(stress, dtype=float).reshape(-1)
    if s.size == 6:
        xx, yy, zz, yz, xz, xy = s
        s = np.array([xx, xy, xz, xy, yy, yz, xz, yz, zz])
    return -s.reshape(3, 3) * atoms.get_volume()


def dp_test(model: Calculator | Path | str, frames: list[Atoms], threads: int = 1
            ) -> DPTestMetrics:
    """Errors of ``model`` (a calculator or a pfd model directory) on labelled frames."""
    if not frames:
        raise ValueError("dp_test: no frames")
    for i, a in enumerate(frames):
        if not fr.has_labels(a):
            raise ValueError(f"dp_test: frame {i} has no energy/forces labels")
    if isinstance(model, Calculator):
        calc = model
    else:
        from pfd.models.registry import load_calculator

        calc = load_calculator(Path(model), threads=threads)
    predicted = predict(calc, frames)

    de, dea, df, dv, dva = [], [], [], [], []
    for ref, pred in zip(frames, predicted, strict=True):
        n = len(ref)
        d = fr.energy(pred) - fr.energy(ref)
        de.append(d)
        dea.append(d / n)
        df.append((fr.forces(pred) - fr.forces(ref)).ravel())
        s_ref, s_pred = fr.stress(ref), fr.stress(pred)
        if any(ref.pbc) and s_ref is not None and s_pred is not None:
            diff = (_virial(ref, s_pred) - _virial(ref, s_ref)).ravel()
            dv.append(diff)
            dva.append(diff / n)
    de_a, dea_a, df_a = np.asarray(de), np.asarray(dea), np.concatenate(df)

    def rmse(x: np.ndarray) -> float:
        return float(math.sqrt(np.mean(np.square(x))))

    return DPTestMetrics(
        n_frames=len(frames),
        energy_rmse_eV=rmse(de_a),
        energy_rmse_per_atom_eV=rmse(dea_a),
        energy_mae_per_atom_eV=float(np.mean(np.abs(dea_a))),
        force_rmse_eV_A=rmse(df_a),
        force_mae_eV_A=float(np.mean(np.abs(df_a))),
        virial_rmse_eV=rmse(np.concatenate(dv)) if dv else None,
        virial_rmse_per_atom_eV=rmse(np.concatenate(dva)) if dva else None,
    )
