"""CP2K labeller: custodian's ``Cp2kJob``, its handlers and ``Cp2kOutputValidator``.

Known defects of the custodian CP2K module, handled here rather than by patching it:
``Cp2kJob.terminate`` runs ``killall cp2k.psmp`` (every worker's CP2K on the machine);
ours kills only its own process group. ``StdErrHandler`` opens its file relative to the
current directory instead of the job's; ours joins the job directory. On top, every
handler sits behind a :class:`PhysicsGuard`, and one handler also raises ``MAX_SCF``
(custodian's SCF ladder only lowers the mixing, which can need more steps).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ase import Atoms
from custodian.cp2k.handlers import (
    AbortHandler,
    DivergingScfErrorHandler,
    FrozenJobErrorHandler,
    NumericalPrecisionHandler,
    StdErrHandler,
    UnconvergedScfErrorHandler,
)
from custodian.cp2k.interpreter import Cp2kModder
from custodian.cp2k.jobs import Cp2kJob
from custodian.cp2k.validators import Cp2kOutputValidator
from custodian.custodian import ErrorHandler

from pfd.label.cp2k_inputs import (
    COORD_FILE,
    INPUT_FILE,
    OUTPUT_FILE,
    STDERR_FILE,
    build_input,
    resolve_basis_and_potentials,
)
from pfd.label.cp2k_output import diagnose, parse_cp2k_output
from pfd.label.custodian_run import (
    OwnProcessJob,
    PhysicsGuard,
    TimeoutHandler,
    run_custodian,
    stamp_label,
)
from pfd.label.versions import cp2k_version

if TYPE_CHECKING:
    from pfd.config import CP2KSpec

_PHYSICS_FIELDS = {"basis_file", "potential_file", "xc_functional", "cutoff_Ry",
                   "rel_cutoff_Ry", "kspacing_invA", "electronic_temperature_K",
                   "spin_polarized", "eps_scf", "eps_default"}


class LabelCp2kJob(OwnProcessJob, Cp2kJob):
    """``Cp2kJob`` that runs in its own session with pinned threads, a watchdog for the
    time limit, and a ``terminate`` that touches nothing but its own process group."""

    def __init__(self, cp2k_cmd: list[str], input_file: str = INPUT_FILE,
                 output_file: str = OUTPUT_FILE, stderr_file: str = STDERR_FILE,
                 env_overrides: dict[str, str] | None = None,
                 timeout_s: float | None = None) -> None:
        super().__init__(cp2k_cmd, input_file=input_file, output_file=output_file,
                         stderr_file=stderr_file, backup=True)
        self.env_overrides = dict(env_overrides or {})
        self.timeout_s = timeout_s

    def setup(self, directory: str = "./") -> None:
        self._clear_timeout_marker(directory)
        super().setup(directory)

    def run(self, directory: str = "./") -> subprocess.Popen[bytes]:
        return self._start([*self.cp2k_cmd, "-i", self.input_file], directory,
                           self.output_file, self.stderr_file)


class JobDirStdErrHandler(StdErrHandler):
    """custodian's StdErrHandler reads ``std_err.txt`` from the CWD; this one from the job."""

    def check(self, directory: str = "./") -> bool:
        self.errors = set()
        path = os.path.join(directory, self.std_err)
        if not os.path.isfile(path):
            return False
        with open(path, errors="replace") as fh:
            for line in fh:
                for err, msgs in StdErrHandler.error_msgs.items():
                    if any(m in line for m in msgs):
                        self.errors.add(err)
        return bool(self.errors)


class ScfStepsHandler(UnconvergedScfErrorHandler):
    """custodian's SCF ladder (OT minimiser / lower Broyden alpha), plus more SCF steps:
    a smaller mixing converges more slowly, and without more steps it cannot finish."""

    def __init__(self, input_file: str = INPUT_FILE, output_file: str = OUTPUT_FILE,
                 max_scf_cap: int = 800) -> None:
        super().__init__(input_file=input_file, output_file=output_file)
        self.max_scf_cap = max_scf_cap

    def correct(self, directory: str = "./") -> dict[str, Any]:
        from pymatgen.io.cp2k.inputs import Cp2kInput, Keyword

        result = dict(super().correct(directory=directory))
        ci = Cp2kInput.from_file(os.path.join(directory, self.input_file))
        scf = ci.by_path("FORCE_EVAL/DFT/SCF")
        current = int(scf.get("MAX_SCF", Keyword("MAX_SCF", 50)).values[0])
        if current < self.max_scf_cap:
            action = {"dict": self.input_file, "action": {"_set": {"FORCE_EVAL": {"DFT": {
                "SCF": {"MAX_SCF": min(self.max_scf_cap, 2 * current)}}}}}}
            Cp2kModder(ci=ci, filename=self.input_file, directory=directory).apply_actions(
                [action])
            result["actions"] = [*(result.get("actions") or []), action]
        return result


def cp2k_handlers(spec: CP2KSpec) -> list[ErrorHandler]:
    """custodian's CP2K handler set for static labels, each behind the physics guard."""
    inputs = [INPUT_FILE, COORD_FILE]
    raw: list[ErrorHandler] = [
        JobDirStdErrHandler(std_err=STDERR_FILE),
        ScfStepsHandler(max_scf_cap=max(spec.max_scf, 8 * spec.max_scf)),
        NumericalPrecisionHandler(input_file=INPUT_FILE, output_file=OUTPUT_FILE),
        DivergingScfErrorHandler(output_file=OUTPUT_FILE, input_file=INPUT_FILE),
        AbortHandler(input_file=INPUT_FILE, output_file=OUTPUT_FILE),
        FrozenJobErrorHandler(input_file=INPUT_FILE, output_file=OUTPUT_FILE,
                              timeout=int(min(3600, spec.timeout_s))),
    ]
    return [TimeoutHandler(), *(PhysicsGuard(h, "cp2k", inputs) for h in raw)]


@dataclass(frozen=True)
class CP2KLabeller:
    spec: CP2KSpec
    elements: tuple[str, ...]
    name: str = "cp2k"

    def fingerprint(self) -> str:
        """Code version, functional, cutoffs, k-spacing, smearing, spin, SCF/precision
        thresholds, and the basis/potential data of every element."""
        phys = self.spec.model_dump(mode="json", include=_PHYSICS_FIELDS)
        phys["engine"] = "cp2k-quickstep"
        phys["version"] = cp2k_version(self.spec.command)
        kinds = resolve_basis_and_potentials(list(self.elements), self.spec)
        phys["kinds"] = {el: [k.basis, k.potential, k.digest()] for el, k in kinds.items()}
        blob = json.dumps(phys, sort_keys=True)
        return "cp2k-" + hashlib.sha256(blob.encode()).hexdigest()[:16]

    def label(self, atoms: Atoms, workdir: Path) -> Atoms:
        t0 = time.perf_counter()
        s = self.spec
        workdir.mkdir(parents=True, exist_ok=True)
        kinds = resolve_basis_and_potentials(sorted(set(atoms.get_chemical_symbols())), s)
        inp, xyz = build_input(atoms, s, kinds)
        (workdir / INPUT_FILE).write_text(inp)
        (workdir / COORD_FILE).write_text(xyz)
        job = LabelCp2kJob.from_spec(s)
        corrections = run_custodian(
            engine="CP2K", jobs=[job], handlers=cp2k_handlers(s),
            validators=[Cp2kOutputValidator(output_file=OUTPUT_FILE)], directory=workdir,
            max_errors=s.max_corrections + 1, output_file=OUTPUT_FILE, stderr_file=STDERR_FILE,
            diagnose=diagnose, tail_cut=r"T I M I N G", missing_hint="install Debian's cp2k")
        out = parse_cp2k_output(workdir / OUTPUT_FILE, atoms)
        return stamp_label(out, self.fingerprint(), f"CP2K {cp2k_version(s.command)}",
                           corrections, t0)
