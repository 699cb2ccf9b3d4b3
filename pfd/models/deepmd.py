"""DeePMD student backend (PyTorch backend of deepmd-kit).

The distillation step ends here: teacher-labelled frames become a small, fast DeePMD
model. Frames stay ``list[ase.Atoms]`` everywhere else in pfd; the deepmd/npy format
exists only inside :func:`frames_to_deepmd`, so that unit and sign conventions are
converted in exactly one place.

Training and freezing run as ``dp --pt ...`` subprocesses rather than through
deepmd's Python API because deepmd configures torch threads and logging globally at
import time; a subprocess keeps those side effects (and any crash) out of the caller,
and lets us pin threads, which matters a lot on small shared machines.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.neighborlist import neighbor_list

from pfd import frames as fr
from pfd.config import DPScheduleSpec, StudentSpec
from pfd.models.deepmd_run import (
    LCURVE_FILE,
    Progress,
    dp_command,
    latest_checkpoint,
    log_tail,
    read_lcurve,
    run_dp,
    run_training,
    thread_env,
)
from pfd.models.meta import MODEL_JSON
from pfd.models.train_stop import student_stop
from pfd.threads import pin_threads

#: Safety margin on the observed neighbour count, so that slightly denser configurations
#: met later (e.g. during MD with the student) do not silently drop neighbours.
SEL_FACTOR = 1.2

MODEL_FILE = "frozen_model.pth"
COMPRESSED_FILE = "frozen_model_compressed.pth"
#: the last training checkpoint, kept in the model directory so a later round can start
#: from this model's weights (``dp train --init-model``) on any machine
CHECKPOINT_FILE = "checkpoint.pt"
META_FILE = MODEL_JSON  # one definition, in pfd.models.meta

__all__ = [
    "COMPRESSED_FILE", "LCURVE_FILE", "META_FILE", "MODEL_FILE", "prepare_training",
    "build_input", "compress", "compute_sel", "freeze", "frames_to_deepmd", "load_calculator",
    "read_deepmd_system", "read_lcurve", "schedule_sections", "train_student",
    "write_training_data",
]


# --------------------------------------------------------------------------- data


def _check_type_map(frames: Sequence[Atoms], type_map: Sequence[str]) -> None:
    if len(set(type_map)) != len(type_map):
        raise ValueError(f"type_map has duplicate elements: {list(type_map)}")
    missing = sorted(set(fr.species(frames)) - set(type_map))
    if missing:
        raise ValueError(
            f"type_map {list(type_map)} lacks element(s) {missing} present in the frames; "
            "a DeePMD model can only describe the elements of its type_map"
        )


def _is_periodic(atoms: Atoms) -> bool:
    # Same rule as deepmd.calculator.DP (any periodic direction -> use the cell), so
    # training and inference agree; a partly periodic cell needs enough vacuum.
    if not any(atoms.pbc):
        return False
    if abs(atoms.cell.volume) < 1e-8:
        raise ValueError("frame is periodic but its cell has zero volume")
    return True


def _voigt_to_matrix(s: np.ndarray) -> np.ndarray:
    s = np.asarray(s, dtype=float).reshape(-1)
    if s.size == 9:
        return s.reshape(3, 3)
    xx, yy, zz, yz, xz, xy = s
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def frames_to_deepmd(frames: list[Atoms], out_dir: Path, type_map: list[str]) -> list[Path]:
    """Write labelled frames as deepmd/npy systems; the only place pfd speaks DeePMD.

    DeePMD requires one fixed atom-type sequence per system, so frames are grouped by
    composition (and periodicity) and atoms are sorted by type within each frame.
    Units are eV and Å. ``virial = -stress * volume`` (eV): ASE's stress is positive
    when tensile, deepmd's virial is the opposite sign and extensive. The virial is
    written only when every frame of that system has stress, since deepmd treats a
    present ``virial.npy`` as a label for all of its frames.
    """
    out_dir = Path(out_dir)
    if not frames:
        raise ValueError("no frames to convert")
    for i, atoms in enumerate(frames):
        if not fr.has_labels(atoms):
            raise ValueError(f"frame {i} has no energy/forces labels")
    _check_type_map(frames, type_map)
    index = {el: k for k, el in enumerate(type_map)}

    groups: dict[tuple[bool, tuple[int, ...]], list[Atoms]] = {}
    for atoms in frames:
        types = np.array([index[s] for s in atoms.get_chemical_symbols()])
        counts = tuple(int(c) for c in np.bincount(types, minlength=len(type_map)))
        groups.setdefault((_is_periodic(atoms), counts), []).append(atoms)

    out_dir.mkdir(parents=True, exist_ok=True)
    systems: list[Path] = []
    for (periodic, counts), members in sorted(groups.items()):
        formula = "".join(f"{el}{n}" for el, n in zip(type_map, counts, strict=True) if n)
        sys_dir = out_dir / (formula + ("" if periodic else "_nopbc"))
        if sys_dir.exists():
            shutil.rmtree(sys_dir)  # never mix stale sets into a fresh system
        set_dir = sys_dir / "set.000"
        set_dir.mkdir(parents=True)

        coords, boxes, energies, forces, virials = [], [], [], [], []
        with_virial = periodic and all(fr.stress(a) is not None for a in members)
        for atoms in members:
            types = np.array([index[s] for s in atoms.get_chemical_symbols()])
            order = np.argsort(types, kind="stable")
            coords.append(atoms.positions[order].reshape(-1))
            forces.append(fr.forces(atoms)[order].reshape(-1))
            energies.append(fr.energy(atoms))
            boxes.append(atoms.cell.array.reshape(-1))
            if with_virial:
                stress = _voigt_to_matrix(fr.stress(atoms))  # type: ignore[arg-type]
                virials.append((-stress * atoms.get_volume()).reshape(-1))
        sorted_types = np.repeat(np.arange(len(type_map)), counts)

        np.savetxt(sys_dir / "type.raw", sorted_types, fmt="%d")
        (sys_dir / "type_map.raw").write_text("\n".join(type_map) + "\n")
        if not periodic:
            (sys_dir / "nopbc").touch()
        np.save(set_dir / "coord.npy", np.asarray(coords, dtype=np.float64))
        np.save(set_dir / "energy.npy", np.asarray(energies, dtype=np.float64))
        np.save(set_dir / "force.npy", np.asarray(forces, dtype=np.float64))
        if periodic:
            np.save(set_dir / "box.npy", np.asarray(boxes, dtype=np.float64))
        if with_virial:
            np.save(set_dir / "virial.npy", np.asarray(virials, dtype=np.float64))
        systems.append(sys_dir)
    return systems


def read_deepmd_system(system: Path) -> list[Atoms]:
    """Structures of a deepmd/npy system written by :func:`frames_to_deepmd`.

    Used to count neighbours for ``sel`` from what deepmd will actually see, and to
    check round trips in tests. Labels are not attached.
    """
    system = Path(system)
    type_map = (system / "type_map.raw").read_text().split()
    types = np.loadtxt(system / "type.raw", dtype=int, ndmin=1)
    symbols = [type_map[t] for t in types]
    periodic = not (system / "nopbc").exists()
    out: list[Atoms] = []
    for set_dir in sorted(system.glob("set.*")):
        coord = np.load(set_dir / "coord.npy").reshape(-1, len(types), 3)
        box = np.load(set_dir / "box.npy").reshape(-1, 3, 3) if periodic else None
        for k in range(len(coord)):
            out.append(
                Atoms(
                    symbols=symbols,
                    positions=coord[k],
                    cell=box[k] if box is not None else None,
                    pbc=periodic,
                )
            )
    return out


def compute_sel(frames: Sequence[Atoms], type_map: Sequence[str], rcut: float) -> list[int]:
    """Per-neighbour-type ``sel``: max neighbours within ``rcut`` over all atoms, padded.

    The maximum is multiplied by :data:`SEL_FACTOR` and rounded up to a multiple of 4
    (deepmd's own ``sel: "auto"`` rounding); at least 4 so that no type's embedding is
    empty.
    """
    index = {el: k for k, el in enumerate(type_map)}
    ntypes = len(type_map)
    max_nb = np.zeros(ntypes, dtype=int)
    for atoms in frames:
        i, j = neighbor_list("ij", atoms, float(rcut))
        if len(i) == 0:
            continue
        jt = np.array([index[s] for s in atoms.get_chemical_symbols()])[j]
        counts = np.zeros((len(atoms), ntypes), dtype=int)
        np.add.at(counts, (i, jt), 1)
        max_nb = np.maximum(max_nb, counts.max(axis=0))
    sel = [math.ceil(n * SEL_FACTOR) for n in max_nb]
    return [max(4, 4 * ((s + 3) // 4)) for s in sel]


def _count_frames(systems: Sequence[Path]) -> int:
    return sum(
        int(np.load(s / "energy.npy", mmap_mode="r").shape[0])
        for system in systems
        for s in sorted(Path(system).glob("set.*"))
    )


def _systems_have_virial(systems: Sequence[Path]) -> bool:
    for system in systems:
        sets = sorted(Path(system).glob("set.*"))
        if not sets or not all((s / "virial.npy").exists() for s in sets):
            return False
    return True


# -------------------------------------------------------------------------- input


def build_input(
    train_systems: Sequence[Path],
    valid_systems: Sequence[Path],
    type_map: list[str],
    settings: StudentSpec,
) -> dict[str, Any]:
    """The ``dp train`` input; a pure function of its arguments (and the system files).

    ``sel=None`` is resolved here from the training systems, so the written input is
    explicit and reproducible instead of depending on deepmd's "auto" at train time.
    """
    if not train_systems:
        raise ValueError("no training systems")
    rcut = float(settings.rcut_A)
    if settings.sel is None:
        structures = [a for s in train_systems for a in read_deepmd_system(Path(s))]
        sel: list[int] | int = compute_sel(structures, type_map, rcut)
    else:
        sel = settings.sel

    descriptor: dict[str, Any] = {
        "type": settings.descriptor,
        "rcut": rcut,
        "rcut_smth": float(settings.rcut_smth_A),
        "neuron": list(settings.descriptor_neuron),
        "axis_neuron": int(settings.axis_neuron),
        "resnet_dt": False,
        "seed": int(settings.seed),
    }
    if settings.descriptor == "se_e2_a":
        if isinstance(sel, int):
            raise ValueError("se_e2_a needs a per-type sel list, got an int")
        if len(sel) != len(type_map):
            raise ValueError(f"sel {sel} must have one entry per type in {type_map}")
        descriptor["sel"] = list(sel)
        descriptor["type_one_side"] = False
    elif settings.descriptor == "se_atten_v2":
        # se_atten counts neighbours regardless of type: only the total matters.
        descriptor["sel"] = int(sel) if isinstance(sel, int) else int(sum(sel))
        # attn_layer=0: type-embedded two-body descriptor without attention (v2 is
        # always "strip" mode); fast and compressible, which is what a student is for.
        descriptor["attn_layer"] = 0
    else:
        raise ValueError(f"unknown descriptor {settings.descriptor!r}")

    return {
        "model": {
            "type_map": list(type_map),
            "descriptor": descriptor,
            "fitting_net": {
                "neuron": list(settings.fitting_neuron),
                "resnet_dt": True,
                "seed": int(settings.seed),
            },
        },
        **schedule_sections(train_systems, valid_systems, settings),
    }


def schedule_sections(
    train_systems: Sequence[Path], valid_systems: Sequence[Path], settings: DPScheduleSpec
) -> dict[str, Any]:
    """The ``learning_rate``, ``loss`` and ``training`` sections of a dp input."""
    has_virial = _systems_have_virial(train_systems)
    loss: dict[str, Any] = {
        "type": "ener",
        "start_pref_e": float(settings.start_pref_e),
        "limit_pref_e": float(settings.limit_pref_e),
        "start_pref_f": float(settings.start_pref_f),
        "limit_pref_f": float(settings.limit_pref_f),
        "start_pref_v": float(settings.start_pref_v) if has_virial else 0.0,
        "limit_pref_v": float(settings.limit_pref_v) if has_virial else 0.0,
    }
    training: dict[str, Any] = {
        "training_data": {
            "systems": [str(s) for s in train_systems],
            "batch_size": settings.batch_size,
        },
        "numb_steps": int(settings.steps),
        "seed": int(settings.seed),
        "disp_file": LCURVE_FILE,
        "disp_freq": settings.resolved_disp_freq(),
        # Average the training losses over each display interval: single-batch values
        # are too noisy to read a learning curve from (one frame may be a relaxed
        # crystal with zero forces).
        "disp_avg": True,
        "save_freq": settings.resolved_save_freq(),
    }
    if valid_systems:
        training["validation_data"] = {
            "systems": [str(s) for s in valid_systems],
            "batch_size": settings.batch_size,
            # Several batches per display for the same reason; capped to stay cheap.
            "numb_btch": max(1, min(10, _count_frames(valid_systems))),
        }
    return {
        "learning_rate": {
            "type": "exp",
            "start_lr": float(settings.start_lr),
            "stop_lr": float(settings.stop_lr),
            "decay_steps": settings.resolved_decay_steps(),
        },
        "loss": loss,
        "training": training,
    }


# ----------------------------------------------------------------------- training

# Kept under their old names: other modules and tests import them from here.
_thread_env = thread_env
_dp_command = dp_command
_log_tail = log_tail


def _run_dp(args: list[str], workdir: Path, log_name: str, threads: int) -> None:
    run_dp(dp_command(), args, workdir, log_name, threads, backend="pt")


def write_training_data(
    train: Sequence[Atoms], valid: Sequence[Atoms], workdir: Path, type_map: list[str]
) -> tuple[list[Path], list[Path]]:
    """Fresh ``data/train`` and ``data/valid`` systems under ``workdir``.

    The directories are wiped first: a system of a composition no longer in the frames
    would otherwise be trained on silently.
    """
    for sub in ("data/train", "data/valid"):
        if (workdir / sub).exists():
            shutil.rmtree(workdir / sub)
    train_systems = frames_to_deepmd(list(train), workdir / "data" / "train", type_map)
    valid_systems = (frames_to_deepmd(list(valid), workdir / "data" / "valid", type_map)
                     if valid else [])
    return train_systems, valid_systems


def freeze(workdir: Path, output: Path, threads: int = 1, head: str | None = None) -> Path:
    """``dp --pt freeze`` of the newest checkpoint in ``workdir`` (TorchScript ``.pth``)."""
    args = ["freeze", "-o", str(output)]
    if head:
        args += ["--head", head]
    _run_dp(args, workdir, "freeze.log", threads)
    if not Path(output).exists():
        raise RuntimeError(f"dp freeze reported success but {output} is missing; "
                           f"log tail:\n{log_tail(workdir / 'freeze.log')}")
    return Path(output)


def compress(frozen: Path, output: Path, workdir: Path, threads: int = 1,
             step: float = 0.01) -> Path:
    """``dp --pt compress``: tabulate the embedding nets (about 2x faster MD).

    Only two-body-embedding descriptors compress (se_e2_a, se_atten_v2 with
    ``attn_layer: 0``); DPA-2/DPA-3 do not, and deepmd says so in the raised log tail.
    The table spans the environments met in the training data (deepmd reads them from
    the frozen model's training script), extrapolated 5x beyond.
    """
    args = ["compress", "-i", str(frozen), "-o", str(output), "-s", str(step)]
    _run_dp(args, Path(workdir), "compress.log", threads)
    if not Path(output).exists():
        raise RuntimeError(f"dp compress reported success but {output} is missing; "
                           f"log tail:\n{log_tail(Path(workdir) / 'compress.log')}")
    return Path(output)


def _lcurve_summary(workdir: Path, model_dir: Path) -> dict[str, Any]:
    summary: dict[str, Any] = {"path": LCURVE_FILE}
    src = workdir / LCURVE_FILE
    if src.exists():
        shutil.copy2(src, model_dir / LCURVE_FILE)
        rows = read_lcurve(src)
        if rows:
            summary.update(first=rows[0], final=rows[-1], n_points=len(rows))
    return summary


def prepare_training(
    train: Sequence[Atoms], valid: Sequence[Atoms], workdir: Path, settings: StudentSpec,
    type_map: list[str] | None = None,
) -> tuple[Path, list[str], dict[str, Any]]:
    """Data systems and the ``dp train`` input of a student, for either framework.

    The PyTorch student (:func:`train_student`) and the TensorFlow/LAMMPS one
    (:func:`pfd.models.deepmd_export.export_lammps`) both start here, so the two are the
    same network trained the same way; they differ only in how they are frozen.
    """
    if not train:
        raise ValueError("no training frames")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    type_map = list(type_map) if type_map is not None else fr.species(train)
    _check_type_map(list(train) + list(valid), type_map)
    train_systems, valid_systems = write_training_data(train, valid, workdir, type_map)
    return workdir, type_map, build_input(train_systems, valid_systems, type_map, settings)


def student_meta(settings: StudentSpec, type_map: list[str], config: dict[str, Any],
                 model_file: str, frozen_file: str) -> dict[str, Any]:
    """What a trained student is, for its ``pfd_model.json`` (both frameworks)."""
    descriptor = config["model"]["descriptor"]
    return {
        "backend": "deepmd",
        "kind": "student",
        "model_file": model_file,
        "frozen_file": frozen_file,
        "compressed": settings.compress,
        "type_map": type_map,
        "descriptor": settings.descriptor,
        "sel": descriptor["sel"],
        "rcut_A": descriptor["rcut"],
        "uses_virial": config["loss"]["limit_pref_v"] > 0 or config["loss"]["start_pref_v"] > 0,
        "deepmd_version": _deepmd_version(),
    }


def fresh_model_dir(workdir: Path) -> Path:
    """``workdir/model``, emptied: never mix a previous model's files into this one."""
    model_dir = workdir / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir()
    return model_dir


def train_student(
    train: list[Atoms],
    valid: list[Atoms],
    workdir: Path,
    settings: StudentSpec,
    type_map: list[str] | None = None,
    progress: Progress | None = None,
    threads: int = 1,
    init_checkpoint: Path | None = None,
) -> Path:
    """Train a DeePMD student and freeze it; returns ``workdir/"model"``.

    From scratch, or with ``init_checkpoint`` (a previous student's ``checkpoint.pt``)
    from that model's weights with a fresh learning-rate schedule: a refinement round
    adds frames to a student that is already close.

    Energies may use any reference (DFT absolute or a teacher's): DeePMD fits per-type
    energy biases itself, so no shift is applied. Calling this again on the same frames
    and settings after a kill continues from the newest checkpoint instead of step 0
    (see :mod:`pfd.models.deepmd_run`); ``progress`` receives each new learning-curve
    row (step, loss, rmse_e_val, rmse_f_val, ...) while training runs. ``threads`` is
    the machine's share for this training, not a setting of the model.
    """
    workdir, type_map, config = prepare_training(train, valid, workdir, settings, type_map)
    init_args: list[str] = []
    identity: dict[str, Any] = {}
    if init_checkpoint is not None:
        init = workdir / "init.ckpt.pt"
        shutil.copy2(init_checkpoint, init)  # the fingerprint hashes it, not its path
        init_args = ["--init-model", init.name]
        identity = {"init_sha256": hashlib.sha256(init.read_bytes()).hexdigest()}
    stop, stop_identity = student_stop(settings)
    run = run_training(workdir, config, [workdir / "data"], dp=dp_command(), backend="pt",
                       threads=threads, progress=progress, init_args=init_args,
                       identity=identity | stop_identity, stop=stop)

    model_dir = fresh_model_dir(workdir)
    ckpt = latest_checkpoint(workdir, "pt")
    if ckpt is not None:
        shutil.copy2(workdir / ckpt[0], model_dir / CHECKPOINT_FILE)
    frozen = freeze(workdir, model_dir / MODEL_FILE, threads)
    model_file = frozen.name
    if settings.compress:
        model_file = compress(frozen, model_dir / COMPRESSED_FILE, workdir, threads).name
    shutil.copy2(workdir / "input.json", model_dir / "input.json")
    meta = student_meta(settings, type_map, config, model_file, MODEL_FILE)
    write_model_meta(model_dir, workdir, meta, settings, train, valid, run)
    return model_dir


def write_model_meta(model_dir: Path, workdir: Path, meta: dict[str, Any], settings: Any,
                     train: Sequence[Atoms], valid: Sequence[Atoms], run: Any) -> None:
    """Write ``pfd_model.json``: what the model is (``meta``) plus how its training went."""
    meta = meta | {
        "settings": settings.model_dump(mode="json"),
        "n_train_frames": len(train),
        "n_valid_frames": len(valid),
        "train_seconds": round(run.seconds, 2),
        "resumed_from_step": run.resumed_from_step,
        "stopped_early": run.stopped,
        "stopped_at_step": run.stopped_at_step,
        "steps_trained": run.steps_done,
        "lcurve": _lcurve_summary(workdir, model_dir),
    }
    (model_dir / META_FILE).write_text(json.dumps(meta, indent=2))


def _deepmd_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("deepmd-kit")
    except PackageNotFoundError:
        return None


# ---------------------------------------------------------------------- inference


def load_calculator(model_dir: Path, threads: int = 1) -> Calculator:
    """ASE calculator for a trained DeePMD model (``model_dir`` or the ``.pth`` itself).

    For a directory the file named by ``pfd_model.json`` is used (the compressed model
    when there is one).

    torch's thread count is process-wide, so this sets it for the whole process;
    deepmd is imported lazily so that importing pfd never pays for (or is configured
    by) deepmd's import-time thread setup.
    """
    path = Path(model_dir)
    if path.is_dir():
        meta_path = path / META_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        if meta.get("framework") == "tensorflow":
            raise ValueError(
                f"{path}: a TensorFlow-backend (LAMMPS) DeePMD model; this environment runs "
                "PyTorch models only. Use pfd.models.deepmd_export.load_calculator (it "
                "evaluates the model in the LAMMPS environment) or LAMMPS itself")
        path = path / str(meta.get("model_file", MODEL_FILE))
    if not path.exists():
        raise FileNotFoundError(f"frozen DeePMD model not found: {path}")
    # deepmd reads the environment at import; never override the user's setting
    pin_threads(threads, env=_thread_env(threads), override=False, torch=False)
    from deepmd.calculator import DP

    pin_threads(threads, override=False, torch=True)  # after deepmd's import-time setup
    return DP(model=str(path))
