"""One contract for every fine-tunable foundation model, and the table of who implements it.

A backend module (``pfd.models.<name>``) provides:

* ``BACKEND`` — the name written into every model directory's ``pfd_model.json``;
* ``finetune(train, valid, workdir, settings, base_model_dir=None, progress=None,
  threads=1) -> Path`` — fine-tune on labelled frames with a validation split, early
  stopping and resume after a kill; returns a model directory whose calculator speaks
  the labeller's energies (:mod:`pfd.models.energy_shift`);
* ``load_calculator(model_dir, threads=1)`` — an ASE calculator for such a directory;
* ``foundation_calculator(name, threads=1)`` — the foundation as given (its own energy
  reference): what validation compares a fine-tune against;
* ``foundation_elements(name) -> list[str] | None`` — the elements the foundation
  represents (None: cannot tell without the run), so ``pfd check`` refuses a structure
  the model cannot learn before any DFT is paid for.

MD, labelling, selection and validation never import a backend: they load a model
directory through :func:`pfd.models.registry.load_calculator`, which reads its backend
from ``pfd_model.json`` and asks this table.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from ase import Atoms
from ase.calculators.calculator import Calculator

from pfd.config import FinetuneSpec

#: backend name -> module implementing the contract. ``deepmd`` fine-tunes a user's
#: DPA checkpoint (``deepmd_finetune``); its model directories, like the students',
#: load through ``deepmd`` (PyTorch) or ``deepmd_export`` (TensorFlow, for LAMMPS).
MODULES = {
    "sevennet": "pfd.models.sevennet",
    "chgnet": "pfd.models.chgnet",
    "mace": "pfd.models.mace",
    "deepmd": "pfd.models.deepmd_finetune",
}


def module(backend: str) -> ModuleType:
    if backend not in MODULES:
        raise ValueError(f"unknown model backend {backend!r} (allowed: {', '.join(MODULES)})")
    return importlib.import_module(MODULES[backend])


def finetune(settings: FinetuneSpec, train: list[Atoms], valid: list[Atoms], workdir: Path,
             progress: Callable[[dict[str, Any]], None] | None = None,
             base_model_dir: Path | None = None, threads: int = 1) -> Path:
    """Fine-tune with the backend ``settings.backend`` names; returns the model directory."""
    return module(settings.backend).finetune(train, valid, workdir, settings,
                                             base_model_dir=base_model_dir,
                                             progress=progress, threads=threads)


def foundation_calculator(settings: FinetuneSpec, threads: int = 1) -> Calculator:
    """The run's foundation as given: no fine-tune, no energy shift."""
    return module(settings.backend).foundation_calculator(_foundation(settings), threads)


def foundation_elements(settings: FinetuneSpec) -> list[str] | None:
    return module(settings.backend).foundation_elements(_foundation(settings))


def _foundation(settings: FinetuneSpec) -> str:
    return str(settings.checkpoint if settings.backend == "deepmd" else settings.foundation)
