"""Fine-tune a MACE foundation (a user's ``.model`` file, e.g. MACE-MP-0) with mace-torch.

Why a second environment: mace-torch pins ``e3nn==0.4.4`` and its checkpoints depend on
that release's Clebsch-Gordan conventions (the maintainers refuse to lift the pin for
that reason), while SevenNet needs ``e3nn>=0.5``. So everything MACE runs in
``.venv-mace`` (``scripts/install-mace-env.sh``): training is mace's own
``mace_run_train`` (its fine-tuning path, naive: ``--multiheads_finetuning False``), and
the calculator is a worker there (:mod:`pfd.models.env_worker`).

Energy reference, measured here with mace-torch 0.3.16: ``--E0s estimated`` logs refitted
E0s but the saved fine-tuned model keeps the foundation's, so the energies stay off by
the reference. pfd therefore fits its own per-element shift to the labeller
(:func:`pfd.models.energy_shift.fit_energy_shift`, as for every backend), writes it into
a copy of the starting model's E0s (``_mace_tool.py shift``) and fine-tunes that copy
with those E0s given: the model trains on the labeller's energies and speaks them, with
no wrapper.

Early stopping and resume are mace's: ``--patience`` epochs without a better validation
loss, checkpoints only when it improves, ``--restart_latest`` continues a killed run
from its best epoch. As with the in-process backends the starting weights count as
epoch 0: a fine-tune that never beats them keeps them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.io import write

from pfd import frames as fr
from pfd.config import FinetuneSpec, file_digest
from pfd.device import torch_device
from pfd.models import epoch_state
from pfd.models.energy_shift import fit_energy_shift
from pfd.models.env_worker import WorkerCalculator
from pfd.models.meta import read_model_json as meta_json
from pfd.models.meta import starting_point, write_model_json
from pfd.threads import thread_env

BACKEND = "mace"
MODEL_FILE = "mace.model"
INSTALLER = "scripts/install-mace-env.sh"
TOOL = Path(__file__).with_name("_mace_tool.py")
#: mace model files are whole pickled modules: torch >= 2.6 refuses them unless told
_LOAD_ENV = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
_NAME = "pfd"  # mace's --name: the file names in its checkpoint and results folders


@dataclass(frozen=True)
class MaceEnv:
    """The mace-torch environment's executables."""

    root: Path
    python: Path
    train: Path

    def version(self) -> str:
        out = subprocess.run([str(self.python), "-c", "import importlib.metadata as m; "
                              "print(m.version('mace-torch'), m.version('e3nn'))"],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()


def default_env_dir() -> Path:
    """``$PFD_MACE_VENV`` or ``.venv-mace`` at the repository root."""
    explicit = os.environ.get("PFD_MACE_VENV")
    if explicit:
        return Path(explicit)
    return Path(__file__).resolve().parents[2] / ".venv-mace"


def mace_env(root: Path | str | None = None) -> MaceEnv:
    """The MACE environment, or a one-line error saying how to build it."""
    root = Path(root) if root is not None else default_env_dir()
    env = MaceEnv(root=root, python=root / "bin" / "python", train=root / "bin" / "mace_run_train")
    missing = [str(p) for p in (env.python, env.train) if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"finetune.backend mace: the MACE environment is not at {root} (missing "
            f"{missing}); build it with `bash {INSTALLER}` or point PFD_MACE_VENV at one")
    return env


def _env(threads: int) -> dict[str, str]:
    return {**os.environ, **thread_env(threads), **_LOAD_ENV}


def foundation_file(name: str) -> Path:
    """The foundation as a file: MACE weights cannot be downloaded here, so a name that is
    not a readable file is an error naming it."""
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"finetune.foundation: {name!r} is not a MACE model file (backend mace needs "
            "the .model file of the foundation, e.g. MACE-MP-0's, saved beside the config)")
    return path.resolve()


def _calculator(model: Path, threads: int) -> WorkerCalculator:
    return WorkerCalculator(mace_env().python, "mace", model, threads=threads,
                            env={**_LOAD_ENV, "PFD_MACE_DEVICE": torch_device()})


def foundation_calculator(name: str, threads: int = 1) -> Calculator:
    """The foundation as given, in its own energy reference."""
    return _calculator(foundation_file(name), threads)


def foundation_elements(name: str) -> list[str]:
    """The elements the foundation's file represents (its ``atomic_numbers``)."""
    path = foundation_file(name)
    try:
        calc = _calculator(path, 1)
    except RuntimeError as err:  # the worker's traceback: its last line says why
        why = str(err).strip().splitlines()[-1]
        raise ValueError(f"finetune.foundation: {path} could not be loaded by mace-torch "
                         f"({why})") from None
    try:
        return sorted(calc.type_map)
    finally:
        calc.close()


#: architectures for :func:`train_new`: ``small`` for tests; ``mp-medium`` is the shape of
#: MACE-MP-0 "medium" (128x0e+128x1o, correlation 3, r_max 6 Å), for timing fine-tunes
#: of a real foundation's size without its weights
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "small": {"model": "MACE", "num_channels": 8, "max_L": 0, "r_max": 4.5,
              "num_interactions": 2, "correlation": 2},
    "mp-medium": {"model": "ScaleShiftMACE", "num_channels": 128, "max_L": 1, "r_max": 6.0,
                  "num_interactions": 2, "correlation": 3, "max_ell": 3,
                  "num_radial_basis": 10, "num_cutoff_basis": 5,
                  "interaction_first": "RealAgnosticResidualInteractionBlock",
                  "interaction": "RealAgnosticResidualInteractionBlock"},
}


def train_new(frames: list[Atoms], workdir: Path, architecture: str = "small",
              epochs: int = 4, seed: int = 1, threads: int = 1) -> Path:
    """A MACE trained from scratch on labelled frames; returns its ``.model`` file.

    What tests and benchmarks use as a foundation: no MACE weights can be downloaded
    where pfd is developed, and such a file takes the same code path as MACE-MP-0's.
    The last fifth of the frames (at least one) validates.
    """
    env = mace_env()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    n_valid = max(1, len(frames) // 5)
    with_stress = all(fr.stress(a) is not None for a in frames)
    _write_xyz(workdir / "train.xyz", frames[:-n_valid], with_stress)
    _write_xyz(workdir / "valid.xyz", frames[-n_valid:], with_stress)
    arch = [f"--{k}={v}" for k, v in ARCHITECTURES[architecture].items()]
    out = subprocess.run(
        [str(env.train), "--name=foundation", f"--train_file={workdir / 'train.xyz'}",
         f"--valid_file={workdir / 'valid.xyz'}", "--energy_key=REF_energy",
         "--forces_key=REF_forces", "--stress_key=REF_stress", "--E0s=average", *arch,
         f"--max_num_epochs={epochs}", "--batch_size=4", "--device=cpu",
         "--default_dtype=float64", f"--seed={seed}", f"--model_dir={workdir}",
         f"--checkpoints_dir={workdir / 'c'}", f"--results_dir={workdir / 'r'}",
         f"--log_dir={workdir / 'l'}"],
        capture_output=True, text=True, env=_env(threads))
    if out.returncode:
        raise RuntimeError(f"mace_run_train (from scratch) failed: {out.stderr[-2000:]}")
    return workdir / "foundation.model"


def read_model_json(model_dir: Path) -> dict[str, Any]:
    return meta_json(model_dir, BACKEND)


def load_calculator(model_dir: Path, threads: int = 1) -> Calculator:
    """A calculator for a pfd mace model directory (the labeller's energy reference)."""
    meta = read_model_json(Path(model_dir))
    return _calculator(Path(model_dir) / meta["checkpoint"], threads)


# ---------------------------------------------------------------------------------------
# fine-tuning


def _write_xyz(path: Path, frames: list[Atoms], with_stress: bool) -> None:
    """Frames under mace's ``REF_`` keys (ASE's own ``energy``/``forces`` names would be
    read through a calculator and are ambiguous to mace)."""
    out = []
    for a in frames:
        b = Atoms(numbers=a.numbers, positions=a.positions, cell=a.cell, pbc=a.pbc)
        b.info["REF_energy"] = fr.energy(a)
        b.arrays["REF_forces"] = fr.forces(a)
        if with_stress and fr.stress(a) is not None:
            b.info["REF_stress"] = fr.stress(a)
        out.append(b)
    write(path, out, format="extxyz")


def _tool(env: MaceEnv, *args: str) -> None:
    out = subprocess.run([str(env.python), "-P", str(TOOL), *args], capture_output=True,
                         text=True, env=_env(1))
    if out.returncode:
        raise RuntimeError(f"mace tool {args[0]} failed: {out.stderr.strip()[-2000:]}")


def _read_results(results_dir: Path) -> list[dict[str, Any]]:
    """mace's evaluation rows (``mode: eval``), in order; the first (epoch ``null``) is
    the starting model."""
    rows: list[dict[str, Any]] = []
    for path in sorted(results_dir.glob(f"{_NAME}*_train.txt")):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if row.get("mode") == "eval":
                rows.append(row)
    return rows


def _history(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in pfd's epoch numbering (0 = the start, mace's epoch k = k + 1); a resumed
    run evaluates its start again, so the last row of each epoch wins."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for row in rows:
        epoch = 0 if row.get("epoch") is None else int(row["epoch"]) + 1
        if epoch == 0 and 0 in by_epoch:
            continue  # a resumed run's own first evaluation: the run's start stays row 0
        by_epoch[epoch] = {"epoch": epoch, "valid_loss": float(row["loss"]),
                           "valid_energy_rmse": float(row.get("rmse_e_per_atom", "nan")),
                           "valid_force_rmse": float(row.get("rmse_f", "nan"))}
    return [by_epoch[e] for e in sorted(by_epoch)]


def _train_args(settings: FinetuneSpec, start: Path, e0: dict[str, float], train: Path,
                valid: Path, work: Path, with_stress: bool) -> list[str]:
    """``mace_run_train`` flags for a naive fine-tune of ``start`` under ``settings``.

    The E0s are given as numbers (``start``'s own, already shifted to the labeller):
    ``--E0s foundation`` fails on a one-element foundation in mace-torch 0.3.16.
    """
    from ase.data import atomic_numbers

    e0s = "{" + ", ".join(f"{atomic_numbers[el]}: {v!r}" for el, v in sorted(e0.items())) + "}"
    return [
        f"--name={_NAME}", f"--foundation_model={start}", "--multiheads_finetuning=False",
        f"--E0s={e0s}", f"--train_file={train}", f"--valid_file={valid}",
        "--energy_key=REF_energy", "--forces_key=REF_forces", "--stress_key=REF_stress",
        f"--compute_stress={with_stress}", "--loss=huber",
        f"--energy_weight={settings.energy_weight}", f"--forces_weight={settings.force_weight}",
        f"--stress_weight={settings.stress_weight if with_stress else 0.0}",
        f"--huber_delta={settings.huber_delta}", f"--max_num_epochs={settings.epochs}",
        f"--patience={settings.patience_epochs}", f"--batch_size={settings.batch_size}",
        f"--valid_batch_size={settings.batch_size}", f"--lr={settings.learning_rate}",
        f"--seed={settings.seed}", "--eval_interval=1", "--default_dtype=float64",
        f"--device={torch_device()}", "--restart_latest",
        f"--model_dir={work / 'model'}", f"--checkpoints_dir={work / 'checkpoints'}",
        f"--results_dir={work / 'results'}", f"--log_dir={work / 'logs'}",
    ]


def _watch(results: Path, progress: Callable[[dict[str, Any]], None], done: threading.Event,
           seen: int) -> None:
    """Report each new epoch of a running ``mace_run_train`` (its results file)."""
    while not done.wait(2.0):
        seen = _report(results, progress, seen)
    _report(results, progress, seen)


def _report(results: Path, progress: Callable[[dict[str, Any]], None], seen: int) -> int:
    for row in _history(_read_results(results)):
        if row["epoch"] > seen:
            progress({"step": row["epoch"], **{k: v for k, v in row.items() if k != "epoch"}})
            seen = row["epoch"]
    return seen


def finetune(train: list[Atoms], valid: list[Atoms], workdir: Path, settings: FinetuneSpec,
             base_model_dir: Path | None = None,
             progress: Callable[[dict[str, Any]], None] | None = None,
             threads: int = 1) -> Path:
    """Fine-tune the foundation (or a previous pfd mace model); return the model dir.

    Same contract as the other backends (:mod:`pfd.models.backends`): ``settings`` is the
    run's ``finetune`` block; the work in ``workdir`` belongs to a fingerprint of the
    frames, start and settings, and a rerun after a kill continues mace's newest
    checkpoint; ``progress`` gets one row per epoch (``step`` = epoch).
    """
    if not train:
        raise ValueError("finetune needs at least one training frame")
    env = mace_env()
    workdir = Path(workdir).resolve()
    start_name, foundation = starting_point(
        base_model_dir, str(foundation_file(settings.foundation)), BACKEND)
    start_file = Path(start_name)
    fp = epoch_state.fingerprint(train, valid, {
        "start": file_digest(start_file), "settings": settings.backend_dump(),
        "mace": env.version()})
    work = workdir / "mace"
    stamp = workdir / "fingerprint.txt"
    if not stamp.is_file() or stamp.read_text() != fp:
        shutil.rmtree(work, ignore_errors=True)  # another training's checkpoints
        work.mkdir(parents=True)
        stamp.write_text(fp)
    with_stress = all(fr.stress(a) is not None for a in train + valid)
    shift_file = work / "energy_shift.json"
    if shift_file.is_file():
        shift, e0 = json.loads(shift_file.read_text())
    else:
        calc = _calculator(start_file, threads)
        try:
            shift = fit_energy_shift(train, calc)
            e0 = {el: calc.info["e0_eV"][el] + mu for el, mu in shift.items()}
        finally:
            calc.close()
        shift_file.write_text(json.dumps([shift, e0]))
    shifted = work / "start.model"
    if not shifted.is_file():
        _tool(env, "shift", str(start_file), str(shifted), json.dumps(shift))
    train_xyz, valid_xyz = work / "train.xyz", work / "valid.xyz"
    _write_xyz(train_xyz, train, with_stress)
    _write_xyz(valid_xyz, valid or train, with_stress)

    resumed = any((work / "checkpoints").glob("*.pt"))
    resumed_after = max((r["epoch"] for r in _history(_read_results(work / "results"))),
                        default=None) if resumed else None
    if settings.epochs > 0:
        done = threading.Event()
        watcher = (threading.Thread(target=_watch, args=(work / "results", progress, done,
                                                         resumed_after or 0), daemon=True)
                   if progress is not None else None)
        if watcher is not None:
            watcher.start()
        t0 = time.monotonic()
        log_path = work / "mace_run_train.log"
        with log_path.open("a") as log:
            proc = subprocess.run(
                [str(env.train), *_train_args(settings, shifted, e0, train_xyz, valid_xyz,
                                              work, with_stress)],
                cwd=work, stdout=log, stderr=subprocess.STDOUT, env=_env(threads))
        done.set()
        if watcher is not None:
            watcher.join()
        if proc.returncode:
            tail = log_path.read_text()[-2500:]
            raise RuntimeError(f"mace_run_train failed (exit {proc.returncode}) after "
                               f"{time.monotonic() - t0:.0f} s; its log ends:\n{tail}")
    history = _history(_read_results(work / "results"))
    if not history:  # epochs: 0, or mace evaluated nothing: the shifted start is the model
        history = [{"epoch": 0, "valid_loss": None}]
    best = min(history, key=lambda r: (r["valid_loss"] is None, r["valid_loss"] or 0.0))
    trained = work / "model" / f"{_NAME}.model"
    keep = trained if best["epoch"] > 0 and trained.is_file() else shifted
    model_dir = workdir / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(keep, model_dir / MODEL_FILE)
    run = epoch_state.EpochRun(history, int(best["epoch"]), resumed_after)
    meta = epoch_state.finetuned_meta(BACKEND, foundation, base_model_dir, MODEL_FILE, shift,
                                      train, with_stress, run, settings.backend_dump())
    meta["mace_version"] = env.version()
    write_model_json(model_dir, meta)
    return model_dir

