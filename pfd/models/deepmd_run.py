"""Running ``dp`` as a subprocess: pinned threads, resumable training, live progress.

Training is the expensive step of both the fine-tune and the distillation, and it is
the step most likely to be killed (a preempted worker, a wall-time limit). deepmd
writes a checkpoint every ``save_freq`` steps and records the newest one in a
``checkpoint`` pointer file *after* the checkpoint is complete, so a run killed at any
moment can be continued from that pointer. :func:`run_training` does that when the
work directory holds a checkpoint of the *same* training (same input and data, by
fingerprint); any other leftover is wiped, so a changed dataset never resumes from
weights trained on the old one.

Progress is read from ``lcurve.out`` while ``dp`` runs (the file is line-buffered by
deepmd) and handed to an optional callback, which is how a workflow engine can
publish it without pfd importing one.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pfd.models.train_stop import Stop, StopCheck
from pfd.threads import thread_env as _base_thread_env

LCURVE_FILE = "lcurve.out"
STATE_FILE = "pfd_train.json"
CHECKPOINT_POINTER = "checkpoint"
#: the log of the shortened schedule that follows a plateau stop (train.log keeps its own)
ANNEAL_LOG = "anneal.log"

Backend = Literal["pt", "tf"]
Progress = Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------------- environment


def thread_env(threads: int) -> dict[str, str]:
    """Thread pins for a dp subprocess: :func:`pfd.threads.thread_env` (why: see there)
    plus deepmd's own intra/inter-op thread variables."""
    n = str(max(1, int(threads)))
    return {
        **_base_thread_env(threads),
        "DP_INTRA_OP_PARALLELISM_THREADS": n,
        "DP_INTER_OP_PARALLELISM_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def dp_command() -> list[str]:
    """The ``dp`` of the running interpreter's environment (the PyTorch build)."""
    # Prefer the dp next to the running interpreter so the venv's deepmd is used even
    # when the venv is not activated.
    local = Path(sys.executable).parent / "dp"
    if local.exists():
        return [str(local)]
    found = shutil.which("dp")
    if found:
        return [found]
    return [sys.executable, "-m", "deepmd"]


def log_tail(path: Path, n_lines: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "<no log>"
    return "\n".join(lines[-n_lines:])


def _die_with_parent() -> None:
    # A worker killed with -9 must not leave its dp child training on: the retry would
    # start a second writer in the same directory. Linux only; harmless elsewhere.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


# --------------------------------------------------------------------------- lcurve


def read_lcurve(path: Path | str) -> list[dict[str, float]]:
    """Parse deepmd's ``lcurve.out`` into one dict per displayed step (for plots).

    Column names come from the header (e.g. ``rmse_f_val``, ``rmse_f_trn``, ``lr``), so
    this follows whatever losses deepmd reported; ``step`` is an int. A restarted run
    appends a second header, which is skipped.
    """
    path = Path(path)
    names: list[str] | None = None
    rows: list[dict[str, float]] = []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            words = stripped.lstrip("#").split()
            if names is None and words and words[0] == "step":
                names = words
            continue
        if names is None:
            raise ValueError(f"{path}: data line before the header")
        values = stripped.split()
        if len(values) != len(names):
            continue  # a line being written when the file was read
        try:
            row: dict[str, float] = {k: float(v) for k, v in zip(names, values, strict=True)}
        except ValueError:
            continue  # a partly written number
        row["step"] = int(row["step"])
        rows.append(row)
    return rows


def progress_record(row: dict[str, float]) -> dict[str, Any]:
    """What a progress callback receives: the lcurve row plus stable names.

    ``loss`` is deepmd's weighted training RMSE (``rmse_trn``); validation RMSEs are NaN
    when no validation data was given, so consumers need not test for missing keys.
    """
    rec: dict[str, Any] = dict(row)
    rec["step"] = int(row["step"])
    rec["loss"] = row.get("rmse_trn", math.nan)
    for key in ("rmse_e_val", "rmse_f_val", "rmse_e_trn", "rmse_f_trn", "lr"):
        rec.setdefault(key, math.nan)
    return rec


def _truncate_lcurve(path: Path, last_step: int) -> None:
    # Rows past the checkpoint will be trained (and displayed) again after a restart;
    # keep the curve single-valued in step.
    if not path.exists():
        return
    kept: list[str] = []
    for line in path.read_text().splitlines():
        words = line.split()
        if words and not line.lstrip().startswith("#"):
            try:
                if int(float(words[0])) > last_step:
                    continue
            except ValueError:
                continue
        kept.append(line)
    path.write_text("\n".join(kept) + ("\n" if kept else ""))


# --------------------------------------------------------------------------- checkpoints

_PT_CKPT = re.compile(r"^model\.ckpt-(\d+)\.pt$")
_TF_CKPT = re.compile(r"^model\.ckpt-(\d+)$")


def latest_checkpoint(workdir: Path, backend: Backend) -> tuple[str, int] | None:
    """(restart argument, step) of the newest *complete* checkpoint, or None.

    Only the pointer file is trusted: deepmd writes it after the checkpoint itself, so a
    checkpoint half-written at a kill is never picked.
    """
    pointer = Path(workdir) / CHECKPOINT_POINTER
    if not pointer.is_file():
        return None
    text = pointer.read_text().strip()
    if backend == "pt":
        name = Path(text).name
        m = _PT_CKPT.match(name)
        if m and (Path(workdir) / name).is_file():
            return name, int(m.group(1))
        return None
    m_tf = re.search(r'model_checkpoint_path:\s*"([^"]+)"', text)
    if not m_tf:
        return None
    prefix = Path(m_tf.group(1)).name
    m = _TF_CKPT.match(prefix)
    if m and (Path(workdir) / f"{prefix}.index").is_file():
        return prefix, int(m.group(1))
    return None


def clean_training_outputs(workdir: Path) -> None:
    """Remove checkpoints, pointer, learning curve and state of a previous training."""
    for pattern in ("model.ckpt*", CHECKPOINT_POINTER, LCURVE_FILE, "out.json", STATE_FILE,
                    "restart.json"):
        for p in Path(workdir).glob(pattern):
            if p.is_file() or p.is_symlink():
                p.unlink()


def fingerprint(workdir: Path, files: Sequence[Path], extra: dict[str, Any]) -> str:
    """Hash of what determines a training: its input, its data files and ``extra``.

    Paths are hashed relative to ``workdir`` so a moved directory still resumes.
    """
    h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    workdir = Path(workdir)
    for root in files:
        paths = sorted(p for p in Path(root).rglob("*") if p.is_file()) if Path(
            root).is_dir() else [Path(root)]
        for p in paths:
            h.update(str(p.resolve().relative_to(workdir.resolve())).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- running


@dataclass
class TrainingRun:
    """What a training call did: for provenance in ``pfd_model.json``.

    ``stopped`` is why training left its schedule before ``numb_steps`` (a plateau, a
    wall budget; see :mod:`pfd.models.train_stop`), ``stopped_at_step`` the checkpoint it
    left it on, and ``steps_done`` the step of the checkpoint the model is (after an
    anneal, past ``stopped_at_step``).
    """

    seconds: float
    resumed_from_step: int | None
    command: list[str]
    stopped: str | None = None
    stopped_at_step: int | None = None
    steps_done: int | None = None


def run_dp(
    dp: Sequence[str],
    args: Sequence[str],
    workdir: Path,
    log_name: str,
    threads: int,
    backend: Backend = "pt",
    progress: Progress | None = None,
    poll_s: float = 2.0,
    env_extra: dict[str, str] | None = None,
    stop: StopCheck | None = None,
) -> Stop | None:
    """Run ``dp --<backend> ARGS`` in ``workdir``; raise with the log tail on failure.

    With ``progress``, new ``lcurve.out`` rows are passed to it every ``poll_s`` seconds
    and once more at the end. A callback that raises is reported once as a warning and
    then ignored: a broken dashboard must not kill hours of training. ``stop`` is asked
    with the learning curve at every poll once a checkpoint exists; the reason it
    returns ends ``dp`` (the :class:`~pfd.models.train_stop.Stop` is returned; None when dp
    ran to its end).
    """
    env = {**os.environ, **thread_env(threads), **(env_extra or {})}
    log = Path(workdir) / log_name
    cmd = [*dp, f"--{backend}", *args]
    lcurve = Path(workdir) / LCURVE_FILE
    state = {"last": -1, "broken": False}

    def curve() -> list[dict[str, float]]:
        try:
            return read_lcurve(lcurve) if lcurve.exists() else []
        except (OSError, ValueError):
            return []

    def publish(rows: list[dict[str, float]]) -> None:
        if progress is None or state["broken"]:
            return
        for row in rows:
            if row["step"] > state["last"]:
                state["last"] = int(row["step"])
                try:
                    progress(progress_record(row))
                except Exception as exc:  # noqa: BLE001 - see docstring
                    warnings.warn(f"training progress callback failed, ignoring it: {exc!r}",
                                  stacklevel=2)
                    state["broken"] = True
                    return

    if progress is not None and lcurve.exists():
        # a resumed run: rows already shown before the kill are not re-announced
        rows = read_lcurve(lcurve)
        state["last"] = int(rows[-1]["step"]) if rows else -1

    halt: Stop | None = None
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        try:
            while True:
                try:
                    proc.wait(timeout=poll_s)
                    break
                except subprocess.TimeoutExpired:
                    rows = curve()
                    publish(rows)
                    if stop is not None and rows and latest_checkpoint(workdir, backend):
                        halt = stop(rows)
                        if halt is not None:
                            break
        finally:
            if proc.poll() is None:  # stopped, or interrupted in Python: end dp here
                proc.kill()
                proc.wait()
    publish(curve())
    if halt is not None:
        return halt
    if proc.returncode != 0:
        raise RuntimeError(
            f"`dp --{backend} {' '.join(args)}` failed with exit code {proc.returncode} in "
            f"{workdir} (full log: {log}). Last lines:\n{log_tail(log)}"
        )
    return None


def _restart_args(workdir: Path, backend: Backend, ckpt: tuple[str, int],
                  numb_steps: int | None = None) -> list[str]:
    """``dp train`` arguments continuing from checkpoint ``ckpt``; ``numb_steps`` set
    shortens the schedule (deepmd recomputes the decay from it, the step comes from the
    checkpoint)."""
    name, step = ckpt
    # Both backends display step N again when restarting from model.ckpt-N (deepmd
    # 3.2's PyTorch trainer stores the index N-1 of the last step done and repeats
    # step N; TF shows the restored state first). Keep one row per step.
    _truncate_lcurve(workdir / LCURVE_FILE, step - 1)
    resolved = workdir / "out.json"
    restart_input = "input.json"
    if backend == "pt" and resolved.is_file():
        restart_input = "restart.json"
        shutil.copy2(resolved, workdir / restart_input)
    if numb_steps is not None:
        cfg = json.loads((workdir / restart_input).read_text())
        cfg["training"]["numb_steps"] = int(numb_steps)
        restart_input = "restart.json"
        (workdir / restart_input).write_text(json.dumps(cfg, indent=2))
    return ["train", restart_input, "--restart", name]


def run_training(
    workdir: Path,
    config: dict[str, Any],
    data_dirs: Sequence[Path],
    *,
    dp: Sequence[str],
    backend: Backend,
    threads: int,
    init_args: Sequence[str] = (),
    identity: dict[str, Any] | None = None,
    progress: Progress | None = None,
    poll_s: float = 2.0,
    stop: StopCheck | None = None,
) -> TrainingRun:
    """Train in ``workdir`` from ``config``, continuing a killed run of the same training.

    ``init_args`` start a fresh run (e.g. ``--finetune ckpt``); a resumed run instead
    restarts from the newest checkpoint with the configuration deepmd itself resolved in
    the first run (``out.json``), because for a fine-tune that is where the pretrained
    model's descriptor was substituted. ``identity`` joins the fingerprint (e.g. the
    base checkpoint of a fine-tune, the stop settings), so changing it starts afresh.

    A training that ``stop`` ended (see :func:`run_dp`) ends on its newest checkpoint,
    or, when the stop asks for an anneal, continues from it with the schedule shortened
    to end ``anneal_steps`` later; called again it stays ended (or finishes the anneal
    a kill interrupted).
    """
    workdir = Path(workdir)
    (workdir / "input.json").write_text(json.dumps(config, indent=2))
    fp = fingerprint(workdir, [workdir / "input.json", *data_dirs],
                     {"backend": backend, "init": list(init_args), **(identity or {})})
    state_path = workdir / STATE_FILE
    previous = json.loads(state_path.read_text()) if state_path.is_file() else {}
    ckpt = latest_checkpoint(workdir, backend) if previous.get("fingerprint") == fp else None
    record: dict[str, Any] = {"fingerprint": fp, "backend": backend}
    t0 = time.perf_counter()

    def finished(resumed: int | None, args: list[str], stopped: dict[str, Any] | None
                 ) -> TrainingRun:
        done = latest_checkpoint(workdir, backend)
        run = TrainingRun(seconds=time.perf_counter() - t0 if args else 0.0,
                          resumed_from_step=resumed,
                          command=[*dp, f"--{backend}", *args] if args else [],
                          steps_done=done[1] if done else None)
        if stopped is not None:
            run.stopped, run.stopped_at_step = stopped["reason"], stopped["step"]
        return run

    def anneal(start: tuple[str, int], to: int) -> list[str]:
        # the shortened schedule from checkpoint ``start`` to step ``to``
        args = _restart_args(workdir, backend, start, to)
        run_dp(dp, args, workdir, ANNEAL_LOG, threads, backend=backend, progress=progress,
               poll_s=poll_s)
        return args

    if ckpt is not None and previous.get("stopped"):
        stopped = previous["stopped"]
        if ckpt[1] >= stopped.get("anneal_to", 0):
            return finished(ckpt[1], [], stopped)
        # killed while annealing: finish the shortened schedule
        return finished(ckpt[1], anneal(ckpt, stopped["anneal_to"]), stopped)
    if ckpt is not None and ckpt[1] >= int(config["training"]["numb_steps"]):
        # killed after the last checkpoint (e.g. while freezing): nothing left to train
        return finished(ckpt[1], [], None)
    if ckpt is None:
        clean_training_outputs(workdir)
        args = ["train", "input.json", *init_args]
        resumed = None
    else:
        args = _restart_args(workdir, backend, ckpt)
        resumed = ckpt[1]
    state_path.write_text(json.dumps(record, indent=2))
    halt = run_dp(dp, args, workdir, "train.log", threads, backend=backend,
                  progress=progress, poll_s=poll_s, stop=stop)
    if halt is None:
        return finished(resumed, args, None)
    done = latest_checkpoint(workdir, backend)
    assert done is not None  # run_dp stops only once a checkpoint exists
    # the model is the checkpoint's: its curve ends there too
    _truncate_lcurve(workdir / LCURVE_FILE, done[1])
    stopped = {"reason": halt.reason, "step": done[1]}
    if halt.anneal_steps > 0:
        stopped["anneal_to"] = done[1] + halt.anneal_steps
    state_path.write_text(json.dumps(record | {"stopped": stopped}, indent=2))
    if halt.anneal_steps > 0:
        anneal(done, stopped["anneal_to"])
    return finished(resumed, args, stopped)
