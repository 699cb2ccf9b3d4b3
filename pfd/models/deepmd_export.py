"""LAMMPS-ready DeePMD students: trained with the TensorFlow backend, run by ``pair_style deepmd``.

Measured here: the LAMMPS plugin of the PyPI deepmd-kit wheel runs TensorFlow-backend
models but not PyTorch ones, and ``dp convert-backend`` PyTorch -> TensorFlow gave
wrong energies and forces, so it is never used. A student meant for LAMMPS is
therefore *trained* with ``dp --tf train`` from the very same ``input.json`` as the
PyTorch student, in a second environment (``.venv-lammps``, built by
``scripts/install-lammps-env.sh``) because the wheel's build and pfd's sdist build of
deepmd-kit cannot share one site-packages.

Everything crossing into that environment is a subprocess: ``dp --tf`` for training,
``lmp`` for MD, and a small worker (:mod:`pfd.models.env_worker`) that evaluates the model
for ASE, so the exported model can be tested and run in ASE from pfd's own environment
(:func:`load_calculator`), and LAMMPS and ASE can be compared on the same file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from pfd.config import StudentSpec
from pfd.models.deepmd import (
    META_FILE,
    fresh_model_dir,
    prepare_training,
    student_meta,
    write_model_meta,
)
from pfd.models.deepmd_run import Progress, log_tail, run_dp, run_training, thread_env
from pfd.models.env_worker import WorkerCalculator
from pfd.models.train_stop import student_stop

FROZEN_PB = "frozen_model.pb"
COMPRESSED_PB = "frozen_model_compressed.pb"
INSTALLER = "scripts/install-lammps-env.sh"


# --------------------------------------------------------------------------- environment


@dataclass(frozen=True)
class LammpsEnv:
    """The TensorFlow deepmd + LAMMPS environment's executables."""

    root: Path
    python: Path
    dp: Path
    lmp: Path

    def versions(self) -> dict[str, str]:
        out = subprocess.run(
            [str(self.python), "-c", "import importlib.metadata as m, json; print(json.dumps("
             "{p: m.version(p) for p in ('deepmd-kit', 'tensorflow-cpu', 'lammps')}))"],
            capture_output=True, text=True, check=True, env={**os.environ, **thread_env(1)})
        return json.loads(out.stdout.strip().splitlines()[-1])


def default_env_dir() -> Path:
    """``$PFD_LAMMPS_VENV`` or ``.venv-lammps`` at the repository root."""
    explicit = os.environ.get("PFD_LAMMPS_VENV")
    if explicit:
        return Path(explicit)
    return Path(__file__).resolve().parents[2] / ".venv-lammps"


def lammps_env(root: Path | str | None = None) -> LammpsEnv:
    """The LAMMPS environment, or a clear error saying how to build it."""
    root = Path(root) if root is not None else default_env_dir()
    env = LammpsEnv(root=root, python=root / "bin" / "python", dp=root / "bin" / "dp",
                    lmp=root / "bin" / "lmp")
    missing = [p for p in (env.python, env.dp, env.lmp) if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"LAMMPS environment not found at {root} (missing {[str(m) for m in missing]}). "
            f"Build it with `bash {INSTALLER}` (about 70 s and 2.3 GB: deepmd-kit 3.2.0 "
            "wheel, tensorflow-cpu, lammps), or point PFD_LAMMPS_VENV at one")
    return env


# --------------------------------------------------------------------------- training


def export_lammps(
    train: list[Atoms],
    valid: list[Atoms],
    workdir: Path,
    settings: StudentSpec,
    type_map: list[str] | None = None,
    progress: Progress | None = None,
    env: LammpsEnv | None = None,
    threads: int = 1,
) -> Path:
    """Train a student with ``dp --tf``, freeze and compress it to ``.pb``; returns the dir.

    Data and input come from :func:`pfd.models.deepmd.prepare_training`, so the LAMMPS
    student and a PyTorch student of the same settings are the same network trained the
    same way. Compression follows ``settings.compress`` (the workflow turns it on: it is
    the fastest form for MD). A killed run resumes like the PyTorch one.
    """
    env = env or lammps_env()
    workdir, type_map, config = prepare_training(train, valid, workdir, settings, type_map)
    stop, identity = student_stop(settings)
    run = run_training(workdir, config, [workdir / "data"], dp=[str(env.dp)], backend="tf",
                       threads=threads, progress=progress, identity=identity, stop=stop)

    model_dir = fresh_model_dir(workdir)
    dp = [str(env.dp)]
    run_dp(dp, ["freeze", "-o", str(model_dir / FROZEN_PB)], workdir, "freeze.log",
           threads, backend="tf")
    model_file = FROZEN_PB
    compress_seconds = None
    if settings.compress:
        # compress re-reads the training data and writes its own checkpoints and
        # learning curve: a directory of its own keeps the training's intact
        cdir = workdir / "compress"
        if cdir.exists():
            shutil.rmtree(cdir)
        cdir.mkdir()
        t0 = time.perf_counter()
        run_dp(dp, ["compress", "-i", str(model_dir / FROZEN_PB), "-o",
                    str(model_dir / COMPRESSED_PB)], cdir, "compress.log", threads,
               backend="tf")
        compress_seconds = round(time.perf_counter() - t0, 2)
        model_file = COMPRESSED_PB
    for name in (FROZEN_PB, model_file):
        if not (model_dir / name).is_file():
            raise RuntimeError(f"{model_dir / name} missing after dp --tf freeze/compress; "
                               f"see {workdir}/freeze.log and compress/compress.log")
    shutil.copy2(workdir / "input.json", model_dir / "input.json")

    elements = " ".join(type_map)
    meta = student_meta(settings, type_map, config, model_file, FROZEN_PB) | {
        "framework": "tensorflow",
        "compress_seconds": compress_seconds,
        "lammps": {
            "pair_style": f"deepmd {model_file}",
            "pair_coeff": f"* * {elements}",
            "units": "metal",
            "note": "LAMMPS atom types are mapped to the model by the element names in "
                    "pair_coeff; load with the PyPI deepmd-kit wheel's plugin",
        },
        "environment": env.versions(),
    }
    meta.pop("deepmd_version", None)  # the LAMMPS environment's versions say it
    write_model_meta(model_dir, workdir, meta, settings, train, valid, run)
    return model_dir


# --------------------------------------------------------------------------- ASE


class TFModelCalculator(WorkerCalculator):
    """ASE calculator for a TensorFlow DeePMD model, evaluated in the LAMMPS environment."""

    def __init__(self, model: Path, env: LammpsEnv, threads: int = 1, **kwargs: Any) -> None:
        super().__init__(env.python, "deepmd-tf", model, threads=threads, **kwargs)


def load_calculator(model_dir: Path, threads: int = 1, env: LammpsEnv | None = None
                    ) -> TFModelCalculator:
    """ASE calculator for an exported model directory (or a ``.pb`` file)."""
    path = Path(model_dir)
    if path.is_dir():
        meta = json.loads((path / META_FILE).read_text())
        path = path / str(meta["model_file"])
    if not path.is_file():
        raise FileNotFoundError(f"TensorFlow DeePMD model not found: {path}")
    return TFModelCalculator(path, env or lammps_env(), threads=threads)


# --------------------------------------------------------------------------- LAMMPS


@dataclass
class LammpsRun:
    """What a LAMMPS run reports; forces of the first step in ASE's atom order and frame."""

    first_energy_eV: float
    first_forces: np.ndarray
    thermo: list[dict[str, float]]
    loop_seconds: float
    ms_per_atom_step: float
    workdir: Path
    lost_atoms: bool = False
    log: str = field(default="", repr=False)


def _parse_thermo(log: str) -> list[dict[str, float]]:
    rows: list[dict[str, float]] = []
    names: list[str] | None = None
    for line in log.splitlines():
        words = line.split()
        if words[:1] == ["Step"]:
            names = words
            continue
        if names is None:
            continue
        if words[:1] == ["Loop"]:
            names = None
            continue
        try:
            values = [float(w) for w in words]
        except ValueError:
            continue
        if len(values) == len(names):
            rows.append(dict(zip(names, values, strict=True)))
    return rows


def run_lammps(
    model_dir: Path,
    atoms: Atoms,
    workdir: Path,
    steps: int = 100,
    temperature_K: float = 300.0,
    timestep_fs: float = 1.0,
    thermo_every: int = 10,
    seed: int = 12345,
    threads: int = 1,
    env: LammpsEnv | None = None,
    timeout_s: float = 600.0,
) -> LammpsRun:
    """NVT MD (Nosé–Hoover, ``fix nvt``) of ``atoms`` in LAMMPS with ``pair_style deepmd``.

    The first step's energy and forces are dumped at full precision so that LAMMPS can
    be checked against the same model evaluated in ASE.
    """
    from ase.calculators.lammps import Prism
    from ase.io import write

    env = env or lammps_env()
    model_dir = Path(model_dir).resolve()
    meta = json.loads((model_dir / META_FILE).read_text())
    if meta.get("framework") != "tensorflow":
        raise ValueError(f"{model_dir}: LAMMPS here runs TensorFlow-backend DeePMD models "
                         "only; export the student with pfd.models.deepmd_export.export_lammps")
    type_map: list[str] = list(meta["type_map"])
    unknown = sorted(set(atoms.get_chemical_symbols()) - set(type_map))
    if unknown:
        raise ValueError(f"elements {unknown} are not in the model's type_map {type_map}")
    species = [el for el in type_map if el in set(atoms.get_chemical_symbols())]
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    write(workdir / "conf.lmp", atoms, format="lammps-data", specorder=species, masses=True,
          atom_style="atomic")
    model_file = model_dir / str(meta["model_file"])
    script = f"""# written by pfd.models.deepmd_export.run_lammps
units           metal
boundary        {' '.join('p' if p else 'f' for p in atoms.pbc)}
atom_style      atomic
atom_modify     map yes
read_data       conf.lmp
pair_style      deepmd {model_file}
pair_coeff      * * {' '.join(species)}
neighbor        1.0 bin
velocity        all create {temperature_K} {seed} mom yes rot yes dist gaussian
timestep        {timestep_fs / 1000.0}
thermo_style    custom step temp pe ke etotal press
thermo_modify   format float %.12g lost warn
thermo          {thermo_every}
dump            first all custom {max(steps, 1) * 10} first.dump id fx fy fz
dump_modify     first sort id format float %.12g
fix             thermostat all nvt temp {temperature_K} {temperature_K} {100 * timestep_fs / 1000.0}
run             {steps}
"""
    (workdir / "in.lammps").write_text(script)
    env_vars = {**os.environ, **thread_env(threads)}
    with (workdir / "lmp.out").open("w") as fh:
        proc = subprocess.run([str(env.lmp), "-in", "in.lammps", "-log", "log.lammps"],
                              cwd=workdir, env=env_vars, stdout=fh, stderr=subprocess.STDOUT,
                              timeout=timeout_s, check=False)
    log = (workdir / "log.lammps").read_text() if (workdir / "log.lammps").exists() else ""
    if proc.returncode != 0 or "ERROR" in log:
        raise RuntimeError(f"LAMMPS failed (exit {proc.returncode}) in {workdir}:\n"
                           f"{log_tail(workdir / 'lmp.out')}")
    thermo = _parse_thermo(log)
    if not thermo or thermo[0]["Step"] != 0:
        raise RuntimeError(f"no thermo output in {workdir / 'log.lammps'}")
    m = re.search(r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps with (\d+) atoms",
                  log)
    loop = float(m.group(1)) if m else float("nan")
    lines = (workdir / "first.dump").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("ITEM: ATOMS")) + 1
    table = np.array([[float(x) for x in ln.split()] for ln in lines[start:start + len(atoms)]])
    forces_lmp = table[np.argsort(table[:, 0]), 1:4]
    forces = Prism(atoms.get_cell()).vector_to_ase(forces_lmp)
    return LammpsRun(
        first_energy_eV=float(thermo[0]["PotEng"]),
        first_forces=np.asarray(forces),
        thermo=thermo,
        loop_seconds=loop,
        ms_per_atom_step=1000.0 * loop / max(1, steps) / len(atoms) if m else float("nan"),
        workdir=workdir,
        lost_atoms="Lost atoms" in log,
        log=log,
    )


def _main() -> None:  # pragma: no cover - manual check: python -m pfd.models.deepmd_export
    env = lammps_env()
    print(json.dumps({"root": str(env.root), **env.versions()}, indent=2))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main())
