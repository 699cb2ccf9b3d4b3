"""Load any pfd model directory as an ASE calculator, whatever its backend.

Every model directory carries ``pfd_model.json`` naming its backend, so MD, labelling
and testing never need to know which library trained the model. DeePMD models come in
two frameworks: PyTorch (students, fine-tuned DPA models; evaluated in-process) and
TensorFlow (LAMMPS-ready students, ``"framework": "tensorflow"``; evaluated in the
LAMMPS environment by a worker process).
"""

from __future__ import annotations

import json
from pathlib import Path

from ase.calculators.calculator import Calculator

from pfd.models.meta import MODEL_JSON

__all__ = ["MODEL_JSON", "load_calculator", "model_info"]


def model_info(model_dir: Path) -> dict[str, object]:
    p = Path(model_dir) / MODEL_JSON
    if not p.is_file():
        raise FileNotFoundError(f"{p}: not a pfd model directory (no {MODEL_JSON})")
    return json.loads(p.read_text())


def load_calculator(model_dir: Path, threads: int = 1) -> Calculator:
    info = model_info(model_dir)
    backend = info.get("backend")
    if backend in ("sevennet", "chgnet", "mace"):
        from pfd.models.backends import module

        return module(backend).load_calculator(Path(model_dir), threads=threads)
    if backend == "deepmd" and info.get("framework") == "tensorflow":
        # a LAMMPS-ready student: evaluated in the LAMMPS environment (deepmd_export)
        from pfd.models import deepmd_export

        return deepmd_export.load_calculator(Path(model_dir), threads=threads)
    if backend == "deepmd":
        from pfd.models import deepmd

        return deepmd.load_calculator(Path(model_dir), threads=threads)
    raise ValueError(f"{model_dir}/{MODEL_JSON}: unknown backend {backend!r} "
                     "(allowed: sevennet, chgnet, mace, deepmd)")
