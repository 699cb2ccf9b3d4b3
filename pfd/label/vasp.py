"""VASP labeller: custodian's ``VaspJob`` with a labelling-safe handler set.

Only convergence fixes run by default (ALGO, mixing, NELM, NBANDS, symmetry tolerances,
parallelisation). Handlers whose fixes change the physics of a label (smearing, SIGMA,
k-point density, cutoff) are off unless named in ``extra_handlers``, and every default
handler sits behind a :class:`PhysicsGuard` that refuses any fix touching what the
fingerprint promises. Each correction applied travels with the frame's label.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms
from custodian.custodian import ErrorHandler
from custodian.vasp import handlers as vh
from custodian.vasp.jobs import VaspJob
from custodian.vasp.validators import VasprunXMLValidator

from pfd.frames import attach_labels
from pfd.label.base import LabelError
from pfd.label.custodian_run import (
    OwnProcessJob,
    PhysicsGuard,
    TimeoutHandler,
    run_custodian,
    stamp_label,
)
from pfd.label.vasp_inputs import (
    INPUT_FILES,
    group_by_species,
    potcar_functional,
    potcar_titles,
    read_potcar,
    reference_incar,
    resolve_potcars,
    write_inputs,
)
from pfd.label.vasp_output import diagnose, parse_vasprun

if TYPE_CHECKING:
    from pfd.config import VaspSpec

# VaspErrorHandler errors whose fixes change smearing, k-points or the structure
PHYSICS_CHANGING_ERRORS = {"tet", "dentet", "triple_product", "brions", "zbrent"}


class LabelVaspJob(OwnProcessJob, VaspJob):
    """``VaspJob`` with pinned threads and a watchdog; its own ``terminate`` already
    kills only this job's process group."""

    def __init__(self, vasp_cmd: list[str], env_overrides: dict[str, str] | None = None,
                 timeout_s: float | None = None) -> None:
        super().__init__(vasp_cmd, auto_npar=False, auto_gamma=False, backup=True)
        self.env_overrides = dict(env_overrides or {})
        self.timeout_s = timeout_s
        self._vasp_process: subprocess.Popen[bytes] | None = None

    def setup(self, directory: str = "./") -> None:
        self._clear_timeout_marker(directory)
        super().setup(directory)

    def run(self, directory: str = "./") -> subprocess.Popen[bytes]:
        # custodian's VaspJob keeps its process as _vasp_process; keep both names in step
        self._vasp_process = self._start(list(self.vasp_cmd), directory, self.output_file,
                                         self.stderr_file)
        return self._vasp_process


def vasp_handlers(spec: VaspSpec) -> list[ErrorHandler]:
    subset = [e for e in vh.VaspErrorHandler.error_msgs if e not in PHYSICS_CHANGING_ERRORS]
    safe: list[ErrorHandler] = [
        vh.VaspErrorHandler(errors_subset_to_catch=subset),
        vh.StdErrHandler(),
        vh.UnconvergedErrorHandler(),
        vh.NonConvergingErrorHandler(),
        vh.PositiveEnergyErrorHandler(),
        vh.FrozenJobErrorHandler(timeout=int(min(21_600, spec.timeout_s))),
    ]
    extra: list[ErrorHandler] = [getattr(vh, name)() for name in spec.extra_handlers]
    return [TimeoutHandler(), *(PhysicsGuard(h, "vasp", INPUT_FILES) for h in safe), *extra]


@dataclass(frozen=True)
class VaspLabeller:
    spec: VaspSpec
    elements: tuple[str, ...]
    name: str = "vasp"

    def fingerprint(self) -> str:
        """Declared VASP version, the INCAR physics (from the input set or template and the
        label settings), the POTCAR titles and file hashes."""
        from pymatgen.core import __version__ as pmg_version

        potcars = resolve_potcars(list(self.elements), self.spec)
        phys: dict[str, Any] = {
            "engine": "vasp", "version": self.spec.version or "undeclared",
            "input_set": None if self.spec.incar_template else
            f"{self.spec.input_set}@pymatgen-{pmg_version}",
            "incar": reference_incar(self.spec, self.elements),
            "potcar_functional": potcar_functional(self.spec), "potcars": {}}
        for el, (sym, path) in potcars.items():
            text = read_potcar(path)
            phys["potcars"][el] = [sym, potcar_titles(text),
                                   hashlib.sha256(text.encode()).hexdigest()[:16]]
        blob = json.dumps(phys, sort_keys=True, default=str)
        return "vasp-" + hashlib.sha256(blob.encode()).hexdigest()[:16]

    def label(self, atoms: Atoms, workdir: Path) -> Atoms:
        t0 = time.perf_counter()
        s = self.spec
        workdir.mkdir(parents=True, exist_ok=True)
        order = group_by_species(atoms)
        grouped = atoms[order]
        potcars = resolve_potcars(sorted(set(atoms.get_chemical_symbols())), s)
        write_inputs(workdir, grouped, s, potcars)
        job = LabelVaspJob.from_spec(s)
        corrections = run_custodian(
            engine="VASP", jobs=[job], handlers=vasp_handlers(s),
            validators=[VasprunXMLValidator()], directory=workdir,
            max_errors=s.max_corrections + 1, output_file="vasp.out",
            stderr_file="std_err.txt", diagnose=diagnose, missing_hint="set labeller.vasp.command")
        labelled_grouped, version = parse_vasprun(workdir / "vasprun.xml", grouped)
        if s.version and not version.startswith(s.version):
            raise LabelError(f"VASP reports version {version!r} but labeller.vasp.version "
                             f"declares {s.version!r}: fix the config or the command")
        inverse = np.argsort(order)
        calc = labelled_grouped.calc
        assert calc is not None
        out = attach_labels(atoms, calc.results["energy"], calc.results["forces"][inverse],
                            calc.results["stress"])
        return stamp_label(out, self.fingerprint(), f"VASP {version}", corrections, t0)
