"""Quantum ESPRESSO ``pw.x`` labeller: energy, forces and stress for one periodic frame.

pw.x runs serially here (one process per Dask worker, threads pinned) because many
small cells in parallel beat one MPI job on a 2-core machine. An SCF that did not
converge is never returned as a label: one retry with gentler mixing, then a recorded
failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms
from ase.io.espresso import read_espresso_out, write_espresso_in

from pfd.frames import attach_labels
from pfd.label.base import LabelError

if TYPE_CHECKING:
    from pfd.config import QESpec

_TRANSIENT_ATTEMPTS = 3
# Debian's pw.x is linked to Open MPI; started without mpirun it forks an orted daemon,
# and two starting at once on a worker pair can fail with "Unable to start a daemon".
# Isolated singletons skip the daemon; running as root needs the two allow flags.
_MPI_ENV = {"OMPI_MCA_ess_singleton_isolated": "1", "OMPI_ALLOW_RUN_AS_ROOT": "1",
            "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_btl_vader_single_copy_mechanism":
            "none"}


class _NotConverged(LabelError):
    """SCF hit electron_maxstep: fixable by gentler mixing, unlike other permanent errors."""


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


def _kpts(atoms: Atoms, kspacing_invA: float) -> tuple[int, int, int]:
    """Monkhorst-Pack grid with spacing 2π·kspacing... in ASE's convention (Å⁻¹, with 2π)."""
    rec = atoms.cell.reciprocal() * 2 * np.pi
    n = [max(1, int(np.ceil(np.linalg.norm(rec[i]) / kspacing_invA))) for i in range(3)]
    return (n[0], n[1], n[2])


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
        """Hash of what changes the physics: cutoffs, k-spacing, smearing, pseudopotential files.

        Mixing, step limits, threads and the command only change how a label is reached,
        not its value, so they stay out: a retry with gentler mixing reuses the cache.
        """
        phys = self.spec.model_dump(mode="json", exclude={"command", "threads", "timeout_s",
                                                           "mixing_beta", "electron_maxstep",
                                                           "pseudo_dir", "pseudopotentials"})
        phys["engine"] = "qe-pw"
        phys["pseudopotentials_sha256"] = self._pseudo_hashes(sorted(self.elements))
        blob = json.dumps(phys, sort_keys=True)
        return "qe-" + hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _input_data(self, mixing_beta: float, maxstep: int) -> dict[str, dict[str, object]]:
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
            "electrons": {"conv_thr": s.conv_thr_Ry * 1.0, "mixing_beta": mixing_beta,
                          "electron_maxstep": maxstep},
        }

    def _run_once(self, atoms: Atoms, workdir: Path, mixing_beta: float, maxstep: int) -> Atoms:
        workdir.mkdir(parents=True, exist_ok=True)
        pp = resolve_pseudopotentials(sorted(set(atoms.get_chemical_symbols())), self.spec)
        inp, out = workdir / "pw.in", workdir / "pw.out"
        with inp.open("w") as fd:
            write_espresso_in(fd, atoms, input_data=self._input_data(mixing_beta, maxstep),
                              pseudopotentials=pp, kpts=_kpts(atoms, self.spec.kspacing_invA))
        env = dict(os.environ, OMP_NUM_THREADS=str(self.spec.threads),
                   OPENBLAS_NUM_THREADS=str(self.spec.threads), **_MPI_ENV)
        cmd = self.spec.command.split() + ["-in", inp.name]
        try:
            with out.open("w") as fo:
                proc = subprocess.run(cmd, cwd=workdir, stdout=fo, stderr=subprocess.STDOUT,
                                      env=env, timeout=self.spec.timeout_s, check=False)
        except FileNotFoundError:
            raise LabelError(f"QE command not found: {cmd[0]!r} (install quantum-espresso)") \
                from None
        except subprocess.TimeoutExpired:
            raise LabelError(f"pw.x exceeded timeout_s={self.spec.timeout_s}",
                             permanent=True) from None
        text = out.read_text(errors="replace")
        if "convergence NOT achieved" in text:
            raise _NotConverged(f"SCF not converged in {maxstep} steps "
                                f"(mixing_beta={mixing_beta})", permanent=True)
        if proc.returncode != 0 or "JOB DONE" not in text:
            tail = "\n".join(text.strip().splitlines()[-8:])
            # an error block from pw.x itself (bad input, pseudopotential) is deterministic
            permanent = "Error in routine" in text
            raise LabelError(f"pw.x failed (exit {proc.returncode}): {tail}", permanent=permanent)
        with out.open() as fd:
            try:
                res = list(read_espresso_out(fd, index=slice(None)))[-1]
            except Exception as err:  # parser errors are many types
                raise LabelError(f"cannot parse pw.x output: {err}") from None
        calc = res.calc
        if calc is None or "forces" not in calc.results or "stress" not in calc.results:
            raise LabelError("pw.x output has no forces/stress (tprnfor/tstress lost?)")
        e, f, s = calc.results["energy"], calc.results["forces"], calc.results["stress"]
        if not (np.isfinite(e) and np.all(np.isfinite(f)) and np.all(np.isfinite(s))):
            raise LabelError("pw.x returned non-finite energy/forces/stress")
        labelled = attach_labels(atoms, e, f, s)
        labelled.info["labeller"] = self.fingerprint()
        return labelled

    def _run_retrying(self, atoms: Atoms, workdir: Path, beta: float, steps: int) -> Atoms:
        for attempt in range(1, _TRANSIENT_ATTEMPTS + 1):
            try:
                return self._run_once(atoms, workdir / f"attempt-{attempt}", beta, steps)
            except LabelError as err:
                if err.permanent or attempt == _TRANSIENT_ATTEMPTS:
                    raise
                time.sleep(0.5 * attempt)
        raise AssertionError("unreachable")

    def label(self, atoms: Atoms, workdir: Path) -> Atoms:
        t0 = time.perf_counter()
        beta, steps = self.spec.mixing_beta, self.spec.electron_maxstep
        try:
            out = self._run_retrying(atoms, workdir / "scf-1", beta, steps)
        except _NotConverged:
            out = self._run_retrying(atoms, workdir / "scf-2", beta / 2, steps * 2)
            out.info["label_corrections"] = f"mixing_beta={beta / 2},electron_maxstep={steps * 2}"
        out.info["label_wall_s"] = round(time.perf_counter() - t0, 2)
        return out
