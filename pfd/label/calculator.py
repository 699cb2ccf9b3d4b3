"""Any ASE calculator as a labeller: the teacher model in distillation, EMT/tblite in tests.

Loading a model costs far more than one frame, so frames go in batches (one task per
batch, one calculator per process); the content-addressed cache and the failure records
work exactly as for DFT. ``identity`` must name what computes the labels (model file
hash, method and version): it is the fingerprint, so two models never share labels.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from pfd.frames import attach_labels
from pfd.label.base import LabelError

CalculatorFactory = Callable[[], Calculator]
# one calculator per (process, identity): a Dask worker loads the teacher once
_CALCULATORS: dict[str, Any] = {}


@dataclass(frozen=True)
class CalculatorLabeller:
    factory: CalculatorFactory  # picklable: a module-level function or functools.partial
    identity: str
    batch_size: int = 64
    stress: bool = True  # for periodic frames; non-periodic ones never get stress
    name: str = "calculator"

    def __post_init__(self) -> None:
        if not self.identity.strip():
            raise ValueError("CalculatorLabeller.identity must name the model/method "
                             "(it is the label cache key)")
        if self.batch_size < 1:
            raise ValueError(f"CalculatorLabeller.batch_size must be >= 1, got {self.batch_size}")

    def fingerprint(self) -> str:
        blob = json.dumps({"engine": "ase-calculator", "identity": self.identity,
                           "stress": self.stress}, sort_keys=True)
        return "calc-" + hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _calculator(self) -> Any:
        calc = _CALCULATORS.get(self.identity)
        if calc is None:
            calc = _CALCULATORS[self.identity] = self.factory()
        return calc

    def _one(self, calc: Any, atoms: Atoms) -> Atoms | LabelError:
        a = atoms.copy()
        a.calc = calc
        try:
            energy = a.get_potential_energy()
            forces = a.get_forces()
            stress = a.get_stress() if self.stress and a.pbc.all() else None
        except Exception as err:  # noqa: BLE001 - one bad frame must not sink the batch
            return LabelError(f"{self.name} ({self.identity}): {type(err).__name__}: {err}")
        finite = np.isfinite(energy) and np.all(np.isfinite(forces)) and (
            stress is None or np.all(np.isfinite(stress)))
        if not finite:
            return LabelError(f"{self.name} ({self.identity}): non-finite energy/forces/stress",
                              permanent=True)
        out = attach_labels(atoms, energy, forces, stress)
        out.info["labeller"] = self.fingerprint()
        return out

    def label_batch(self, frames: list[Atoms], workdir: Path) -> list[Atoms | LabelError]:
        calc = self._calculator()
        return [self._one(calc, a) for a in frames]

    def label(self, atoms: Atoms, workdir: Path) -> Atoms:
        out = self.label_batch([atoms], workdir)[0]
        if isinstance(out, LabelError):
            raise out
        return out
