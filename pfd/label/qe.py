"""Quantum ESPRESSO ``pw.x`` labeller: energy, forces and stress for one periodic frame.

pw.x runs under custodian (:mod:`pfd.label.qe_custodian`): an unconverged SCF gets gentler
mixing and more steps, a crash is rerun, and neither ever becomes a label. pw.x runs
serially by default (one process per Dask worker, threads pinned) because many small
cells in parallel beat one MPI job on a small machine; ``mpi_ranks`` changes that.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms
from ase.io.espresso import read_espresso_out, write_espresso_in

from pfd.frames import attach_labels
from pfd.label.base import LabelError
from pfd.label.custodian_run import (
    TimeoutHandler,
    run_custodian,
    stamp_label,
)
from pfd.label.kpoints import kpoint_mesh
from pfd.label.qe_custodian import (
    PwCrashHandler,
    PwJob,
    PwOutputValidator,
    PwScfHandler,
    diagnose,
)
from pfd.label.versions import qe_version

if TYPE_CHECKING:
    from pfd.config import QESpec

# what changes the value of a label; run settings (command, threads, ranks, mixing, step
# limits, retries) only change how it is reached, so a corrected run reuses the cache
_PHYSICS_FIELDS = {"ecutwfc_Ry", "ecutrho_Ry", "kspacing_invA", "smearing", "degauss_Ry",
                   "conv_thr_Ry"}


def resolve_pseudopotentials(elements: list[str], spec: QESpec) -> dict[str, str]:
    """Map each element to a pseudopotential file in ``spec.pseudo_dir``.

    Explicit choices win; otherwise a PBE file ``<El>.pbe*.UPF`` is picked
    deterministically (norm-conserving first, then by name). Raises a message listing
    what is available.
    """
    pdir = Path(spec.pseudo_dir)
    if not pdir.is_dir():
        raise FileNotFoundError(
            f"pseudo_dir {pdir} does not exist (install Debian's quantum-espresso-data "
            "or set labeller.qe.pseudo_dir)")
    files = sorted(p.name for p in pdir.iterdir() if p.is_file())
    out: dict[str, str] = {}
    for el in elements:
        if el in spec.pseudopotentials:
            name = spec.pseudopotentials[el]
            if name not in files:
                raise FileNotFoundError(f"{el}: {name} not found in {pdir}")
            out[el] = name
            continue
        low = el.lower()
        cands = [f for f in files if f.lower().startswith(f"{low}.pbe")
                 and f.lower().endswith(".upf") and not f.lower().startswith(f"{low}.pbesol")]
        # Norm-conserving first: the default cutoffs suit them; ultrasoft/PAW need ecutrho.
        cands.sort(key=lambda f: (any(t in f.lower() for t in ("rrkjus", "paw", "van")), f))
        if not cands:
            avail = [f for f in files if f.split(".")[0].split("_")[0] == el]
            raise KeyError(f"no PBE pseudopotential for element {el} in {pdir} "
                           f"(files for {el}: {avail or 'none'}); set pseudopotentials.{el}")
        out[el] = cands[0]
    return out


@dataclass(frozen=True)
class QELabeller:
    spec: QESpec
    elements: tuple[str, ...]
    name: str = "qe"

    def _pseudo_hashes(self, elements: list[str]) -> dict[str, str]:
        pp = resolve_pseudopotentials(elements, self.spec)
        return {el: hashlib.sha256((Path(self.spec.pseudo_dir) / f).read_bytes()).hexdigest()[:16]
                for el, f in pp.items()}

    def fingerprint(self) -> str:
        """Hash of what changes the physics: code version, cutoffs, k-spacing, smearing,
        convergence threshold and the pseudopotential files' contents."""
        phys = self.spec.model_dump(mode="json", include=_PHYSICS_FIELDS)
        phys["engine"] = "qe-pw"
        phys["version"] = qe_version(self.spec.command)
        phys["pseudopotentials_sha256"] = self._pseudo_hashes(sorted(self.elements))
        blob = json.dumps(phys, sort_keys=True)
        return "qe-" + hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _input_data(self) -> dict[str, dict[str, object]]:
        s = self.spec
        system: dict[str, object] = {
            "ecutwfc": s.ecutwfc_Ry,
            "occupations": "smearing",
            "smearing": s.smearing,
            "degauss": s.degauss_Ry,
        }
        if s.ecutrho_Ry is not None:
            system["ecutrho"] = s.ecutrho_Ry
        return {
            "control": {"calculation": "scf", "tprnfor": True, "tstress": True,
                        "pseudo_dir": str(s.pseudo_dir), "outdir": "./out",
                        "disk_io": "none", "prefix": "pfd"},
            "system": system,
            "electrons": {"conv_thr": s.conv_thr_Ry * 1.0, "mixing_beta": s.mixing_beta,
                          "electron_maxstep": s.electron_maxstep},
        }

    def label(self, atoms: Atoms, workdir: Path) -> Atoms:
        t0 = time.perf_counter()
        s = self.spec
        workdir.mkdir(parents=True, exist_ok=True)
        pp = resolve_pseudopotentials(sorted(set(atoms.get_chemical_symbols())), s)
        with (workdir / "pw.in").open("w") as fd:
            write_espresso_in(fd, atoms, input_data=self._input_data(), pseudopotentials=pp,
                              kpts=kpoint_mesh(atoms, s.kspacing_invA))
        job = PwJob.from_spec(s)
        handlers = [TimeoutHandler(), PwScfHandler(max_num_corrections=s.scf_fix_attempts),
                    PwCrashHandler(max_num_corrections=s.crash_retries)]
        corrections = run_custodian(
            engine="QE", jobs=[job], handlers=handlers, validators=[PwOutputValidator()],
            directory=workdir, max_errors=s.max_corrections + 1, output_file="pw.out",
            stderr_file="pw.err", diagnose=diagnose, tail_cut=r"^\s+(init_run|Writing output)",
            missing_hint="install quantum-espresso")
        out = parse_pw_output(workdir / "pw.out", atoms)
        return stamp_label(out, self.fingerprint(), f"QE {qe_version(s.command)}",
                           corrections, t0)


def parse_pw_output(path: Path, atoms: Atoms) -> Atoms:
    """Energy (eV), forces (eV/Å) and stress (ASE sign, eV/Å³) of the last SCF in ``path``."""
    with path.open() as fd:
        try:
            res = list(read_espresso_out(fd, index=slice(None)))[-1]
        except Exception as err:  # parser errors are many types
            raise LabelError(f"cannot parse pw.x output: {err}") from None
    calc = res.calc
    if calc is None or "forces" not in calc.results or "stress" not in calc.results:
        raise LabelError("pw.x output has no forces/stress (tprnfor/tstress lost?)")
    e, f, st = calc.results["energy"], calc.results["forces"], calc.results["stress"]
    if not (np.isfinite(e) and np.all(np.isfinite(f)) and np.all(np.isfinite(st))):
        raise LabelError("pw.x returned non-finite energy/forces/stress")
    if len(f) != len(atoms):
        raise LabelError(f"pw.x output has {len(f)} forces for {len(atoms)} atoms")
    return attach_labels(atoms, e, f, st)
