"""Per-element energy shifts: how a fine-tuned model speaks the DFT labeller's energies.

A labeller's absolute energies follow its pseudopotential convention, not a foundation
model's (QE Si is ~ -107 eV/atom, SevenNet-0 and CHGNet ~ -5.4 eV/atom). Every
fine-tuning backend fits a per-element shift ``mu`` once against its starting model,
trains the network on ``E - sum_el n_el * mu_el`` (so it learns the physics, not a
constant), and wraps its calculator in :class:`ShiftedCalculator` so every consumer sees
the labeller's scale. Forces and stresses are shift-invariant and pass through.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from pfd import frames as fr

log = logging.getLogger(__name__)

__all__ = ["ShiftedCalculator", "fit_energy_shift", "fit_offsets", "shifted_frames"]


class ShiftedCalculator(Calculator):
    """Adds per-element energy shifts to a wrapped calculator.

    This is what lets a model trained on shifted energies answer in the DFT labeller's
    reference. An empty shift means "the wrapped model's own reference"; otherwise an
    element without a shift is an error, since its energy would silently be off by
    ~100 eV/atom.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, inner: Calculator, energy_shift: dict[str, float] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner = inner
        self.energy_shift = {k: float(v) for k, v in (energy_shift or {}).items()}

    def shift_of(self, atoms: Atoms) -> float:
        if not self.energy_shift:
            return 0.0
        symbols = atoms.get_chemical_symbols()
        missing = sorted(set(symbols) - set(self.energy_shift))
        if missing:
            raise ValueError(
                f"no energy shift for {missing}: the model was not fine-tuned on these elements"
            )
        return float(sum(self.energy_shift[s] for s in symbols))

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy",),
                  system_changes: Sequence[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        shift = self.shift_of(self.atoms)
        self.inner.calculate(self.atoms, list(properties), list(all_changes))
        res = self.inner.results
        energy = float(res["energy"]) + shift
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": np.array(res["forces"], dtype=float),
            "stress": np.array(res["stress"], dtype=float),
        }




def _composition(frames: Sequence[Atoms], elements: list[str]) -> np.ndarray:
    index = {el: i for i, el in enumerate(elements)}
    counts = np.zeros((len(frames), len(elements)))
    for row, atoms in enumerate(frames):
        for sym in atoms.get_chemical_symbols():
            counts[row, index[sym]] += 1
    return counts


def fit_offsets(frames: Sequence[Atoms], differences: Sequence[float]
                ) -> tuple[dict[str, float], np.ndarray]:
    """Per-element offsets ``mu`` with ``differences ≈ sum_el n_el * mu_el`` (eV per
    frame), and what is left per atom once they are removed: a constant per element is a
    choice of reference, the residual is physics.

    Rows are divided by the atom count so every frame weighs the same, as in the per-atom
    energy loss; for one element this makes ``mu`` the mean per-atom difference. When the
    compositions do not span the elements (e.g. every frame is SiO2) only the combination
    seen in the data is determined; lstsq's minimum-norm answer is exact for those
    compositions and arbitrary, but harmless, for others.
    """
    if not frames:
        raise ValueError("fitting energy offsets needs at least one frame")
    elements = fr.species(frames)
    counts = _composition(frames, elements)
    natoms = counts.sum(axis=1)
    x, y = counts / natoms[:, None], np.asarray(differences, dtype=float) / natoms
    mu, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
    if rank < len(elements):
        log.info("energy offsets: compositions span %d of %d elements; min-norm solution",
                 rank, len(elements))
    return {el: float(m) for el, m in zip(elements, mu, strict=True)}, y - x @ mu


def fit_energy_shift(frames: Sequence[Atoms], calc: Calculator) -> dict[str, float]:
    """Per-element ``mu`` with ``E_dft - E_model ≈ sum_el n_el * mu_el`` (:func:`fit_offsets`)."""
    if not frames:
        raise ValueError("fit_energy_shift needs at least one labelled frame")
    diff = []
    for atoms in frames:
        probe = fr.strip_labels(atoms)
        probe.calc = calc
        diff.append(fr.energy(atoms) - float(probe.get_potential_energy()))
    return fit_offsets(frames, diff)[0]


def shifted_frames(frames: Sequence[Atoms], shift: dict[str, float],
                   with_stress: bool) -> list[Atoms]:
    """The frames with ``E - sum n_el mu_el``: what a backend trains on."""
    out = []
    for atoms in frames:
        missing = set(atoms.get_chemical_symbols()) - set(shift)
        if missing:
            raise ValueError(f"elements {sorted(missing)} are absent from the training frames")
        e = fr.energy(atoms) - sum(shift[s] for s in atoms.get_chemical_symbols())
        out.append(fr.attach_labels(atoms, e, fr.forces(atoms),
                                    fr.stress(atoms) if with_stress else None))
    return out
