"""Running a DFT engine under custodian, with the guarantees labelling needs on top.

custodian knows how to fix engine failures; it does not know that a label is only worth
something if every frame of a dataset was computed with the same physics, that several
engines run side by side on one machine, or that a failure must come back as data. This
module adds those parts for every engine:

- each engine process gets its own session: a timeout or a monitor kills exactly that
  process group, never another worker's run of the same binary;
- a :class:`PhysicsGuard` wraps every handler and undoes any correction that would change
  what the fingerprint promises (cutoff, smearing, k-points, functional, structure);
- custodian's exceptions become :class:`LabelError` with a reason, the output's tail, the
  corrections tried, and whether trying again could ever help (``permanent``).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from custodian.custodian import (
    Custodian,
    CustodianError,
    ErrorHandler,
    MaxCorrectionsError,
    MaxCorrectionsPerHandlerError,
    MaxCorrectionsPerJobError,
    NonRecoverableError,
    ReturnCodeError,
    ValidationError,
)

from pfd.label.base import LabelError
from pfd.threads import thread_env

if TYPE_CHECKING:
    from ase import Atoms

    from pfd.config import CP2KSpec, QESpec, VaspSpec

TIMEOUT_MARKER = "pfd-timeout.json"
# Poll often: with monitors, custodian notices a finished process only at the next poll,
# and a 7 s frame should not wait up to 10 s (custodian's default) to be collected.
POLL_S = 0.2
MONITOR_EVERY = 50  # polls between monitor checks: 10 s

# Debian's MPI-linked engines (pw.x, cp2k.psmp) started without mpirun fork an orted daemon;
# two starting at once can fail with "Unable to start a daemon". Isolated singletons skip it;
# running as root needs the two allow flags.
MPI_ENV = {"OMPI_MCA_ess_singleton_isolated": "1", "OMPI_ALLOW_RUN_AS_ROOT": "1",
           "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_btl_vader_single_copy_mechanism": "none"}

Diagnose = Callable[[Path], tuple[str, bool]]


# Inside a SLURM job (a Dask worker of cluster.jobqueue) Open MPI's mpirun takes its slots
# from the job's task count, which dask-jobqueue sets to 1, and refuses "-np 2". A worker job
# is one node, so its ranks are local: mpirun starts them itself on the job's cores.
SLURM_JOB_MPI_ENV = {"OMPI_MCA_ras": "^slurm", "OMPI_MCA_plm": "^slurm"}


def engine_env(threads: int) -> dict[str, str]:
    """Environment overrides for one engine process: pinned threads (OpenMP oversubscription
    made CP2K 5x slower on 2 busy cores), the MPI singleton fix, and local ranks inside a
    SLURM job."""
    env = {**thread_env(threads), **MPI_ENV}
    if "SLURM_JOB_ID" in os.environ:
        env.update(SLURM_JOB_MPI_ENV)
    return env


def build_command(command: str, mpi_ranks: int, mpirun: str) -> list[str]:
    """The engine command, under ``mpirun`` only when more than one rank is asked for."""
    cmd = shlex.split(command)
    if not cmd:
        raise LabelError("empty engine command", permanent=False)
    if mpi_ranks > 1:
        cmd = shlex.split(mpirun.format(ranks=mpi_ranks)) + cmd
    return cmd


def tail(path: Path, n: int = 12, cut: str | None = None) -> str:
    """The last ``n`` lines of ``path``, or of the part before the first match of ``cut``
    (engines end with timing tables; the message that matters comes before them)."""
    try:
        if cut is None:
            with path.open(errors="replace") as fh:
                return "".join(deque(fh, maxlen=n)).rstrip()
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    m = re.search(cut, text, flags=re.MULTILINE)
    if m:
        text = text[: m.start()]
    return "\n".join(text.rstrip().splitlines()[-n:])


# --------------------------------------------------------------------------- own processes
#: The engine runs under a guard: when the process that started it dies (a Dask worker
#: killed with -9 or for memory, a cluster closed by Ctrl-C of ``pfd run``), the kernel
#: sends the guard SIGHUP (PR_SET_PDEATHSIG, kept across exec) and the guard kills its
#: whole process group — pw.x under mpirun, a wrapper script's children — instead of
#: leaving them computing a frame nobody will read, on the cores its retry needs. Python
#: sets the signal (no ``preexec_fn``, which is unsafe in a threaded worker) and checks
#: the parent is still the one it was started by, then becomes ``sh``, which runs the
#: engine as its child and passes its exit status on.
_GUARD = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGHUP)\n"
    "except (AttributeError, OSError):\n"
    "    pass  # no prctl (not Linux): the engine outlives a killed worker there\n"
    "os.getppid() == int(sys.argv[1]) or sys.exit(129)\n"
    "os.execvp('sh', ['sh', '-c', 'trap \"kill -KILL 0\" HUP; \"$@\" & wait $!',"
    " 'pfd-guard', *sys.argv[2:]])\n")


def guarded(cmd: Sequence[str], directory: str) -> list[str]:
    """``cmd`` under the guard; a missing or non-executable engine raises here as Popen
    would (the guard's shell would only exit 127)."""
    exe = cmd[0]
    if os.sep in exe:
        path: str | None = exe if os.path.isabs(exe) else os.path.join(directory, exe)
    else:
        path = shutil.which(exe)
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), exe)
    if not os.access(path, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    return [sys.executable, "-I", "-S", "-c", _GUARD, str(os.getpid()), *cmd]


def start_own_process(cmd: Sequence[str], directory: str, stdout: Path, stderr: Path,
                      env_overrides: Mapping[str, str], timeout_s: float | None
                      ) -> subprocess.Popen[bytes]:
    """Start the engine in its own session, under the guard that ends it with this
    process (:data:`_GUARD`), and arm a watchdog for ``timeout_s``.

    The watchdog waits on this process only, so it ends with the process (no thread is
    left sleeping per finished frame); on timeout it kills the process group and leaves a
    marker that :class:`TimeoutHandler` turns into a recorded failure.
    """
    env = dict(os.environ, **env_overrides)
    with stdout.open("w") as out, stderr.open("w", buffering=1) as err:
        proc = subprocess.Popen(guarded(cmd, directory), cwd=directory, stdout=out,
                                stderr=err, env=env, start_new_session=True)
    if timeout_s:
        def _watch() -> None:
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                (Path(directory) / TIMEOUT_MARKER).write_text(json.dumps(
                    {"timeout_s": timeout_s, "pid": proc.pid}))
                kill_own_process(proc)

        threading.Thread(target=_watch, daemon=True, name=f"pfd-watchdog-{proc.pid}").start()
    return proc


def kill_own_process(proc: subprocess.Popen[bytes] | None, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, to this process's group only (custodian's CP2K job runs
    ``killall cp2k.psmp``, which would take every other worker's frame down with it).

    The group, not the guard, decides when it is over: the guard's shell dies of SIGTERM
    at once, while an engine may take its time or ignore it."""
    if proc is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        if _group_gone(proc, grace_s):
            break
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass


def _group_gone(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        proc.poll()  # reap the guard: a zombie still counts as a member of its group
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


class OwnProcessJob:
    """Mixin for custodian jobs that run one engine process of their own.

    The process starts in its own session with a watchdog (:func:`start_own_process`);
    ``terminate`` kills only that process group. Subclasses set ``env_overrides`` and
    ``timeout_s`` and call :meth:`_start` from ``run``.
    """

    env_overrides: dict[str, str]
    timeout_s: float | None
    _process: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_spec(cls, spec: QESpec | CP2KSpec | VaspSpec, **kwargs: Any) -> Self:
        """The job for one frame under ``spec``'s machine settings: its command (under
        ``mpirun`` for several ranks), pinned threads and time limit."""
        cmd = build_command(spec.command, spec.mpi_ranks, spec.mpirun)
        return cls(cmd, env_overrides=engine_env(spec.threads),  # type: ignore[call-arg]
                   timeout_s=spec.timeout_s, **kwargs)

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.returncode

    @staticmethod
    def _clear_timeout_marker(directory: str) -> None:
        (Path(directory) / TIMEOUT_MARKER).unlink(missing_ok=True)

    def _start(self, cmd: Sequence[str], directory: str, stdout_name: str,
               stderr_name: str) -> subprocess.Popen[bytes]:
        d = Path(directory)
        self._process = start_own_process(cmd, directory, d / stdout_name, d / stderr_name,
                                          self.env_overrides, self.timeout_s)
        return self._process

    def terminate(self, directory: str = "./") -> None:
        kill_own_process(self._process)


# --------------------------------------------------------------------------- handlers
class TimeoutHandler(ErrorHandler):
    """Turns the watchdog's marker into an unfixable error: a frame that ran past the time
    limit will do so again, so it is a permanent failure."""

    is_monitor = False
    permanent_failure = True

    def __init__(self, marker: str = TIMEOUT_MARKER) -> None:
        self.marker = marker
        self.last_errors: list[str] = []

    def check(self, directory: str = "./") -> bool:
        return (Path(directory) / self.marker).is_file()

    def correct(self, directory: str = "./") -> dict[str, Any]:
        info = json.loads((Path(directory) / self.marker).read_text())
        self.last_errors = [f"exceeded timeout_s={info.get('timeout_s')}"]
        return {"errors": self.last_errors, "actions": []}


def _physics_signature(engine: str, directory: Path) -> dict[str, str]:
    if engine == "cp2k":
        from pfd.label.cp2k_inputs import physics_signature as cp2k_sig

        return cp2k_sig(directory)
    if engine == "vasp":
        from pfd.label.vasp_inputs import physics_signature as vasp_sig

        return vasp_sig(directory)
    raise ValueError(f"no physics signature for engine {engine!r}")


class PhysicsGuard(ErrorHandler):
    """Lets a custodian handler fix convergence, never the physics of the label.

    custodian's fixes include raising smearing, changing k-point meshes, cutoffs or even the
    structure. One such frame inside a dataset is a silent accuracy bug, so the guard
    snapshots the inputs, lets the handler correct, compares the physics signature and,
    if it moved, restores the inputs and reports the fix as refused (an unfixable error).
    """

    def __init__(self, handler: ErrorHandler, engine: str, input_files: Sequence[str]) -> None:
        self.handler = handler
        self.engine = engine
        self.input_files = list(input_files)
        self.refused: list[str] = []
        self.is_monitor = handler.is_monitor
        self.is_terminating = handler.is_terminating
        self.raises_runtime_error = True  # a refused fix must stop the job, not be skipped
        self.max_num_corrections = handler.max_num_corrections
        self.raise_on_max = handler.raise_on_max

    @property
    def name(self) -> str:
        return type(self.handler).__name__

    def check(self, directory: str = "./") -> bool:
        return bool(self.handler.check(directory=directory))

    def correct(self, directory: str = "./") -> dict[str, Any]:
        d = Path(directory)
        before = {f: (d / f).read_bytes() if (d / f).is_file() else None
                  for f in self.input_files}
        sig0 = _physics_signature(self.engine, d)
        result = dict(self.handler.correct(directory=directory))
        sig1 = _physics_signature(self.engine, d)
        changed = sorted(k for k in set(sig0) | set(sig1) if sig0.get(k) != sig1.get(k))
        if not changed:
            return result
        for f, data in before.items():
            if data is None:
                (d / f).unlink(missing_ok=True)
            else:
                (d / f).write_bytes(data)
        msg = (f"refused {self.name}'s fix: it changes {', '.join(changed)} "
               "(label physics must stay fixed)")
        self.refused.append(msg)
        return {"errors": [*result.get("errors", []), msg], "actions": [],
                "refused_actions": result.get("actions")}


# --------------------------------------------------------------------------- the run
def _handler_name(handler: Any) -> str:
    inner = getattr(handler, "handler", None)
    return type(inner if isinstance(inner, ErrorHandler) else handler).__name__


def corrections_of(run_log: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """custodian's run log as plain JSON: which handler saw what, and what it changed."""
    out: list[dict[str, Any]] = []
    for entry in run_log:
        for corr in entry.get("corrections", []):
            rec = {"handler": _handler_name(corr.get("handler")),
                   "errors": [str(e) for e in corr.get("errors") or []],
                   "actions": json.loads(json.dumps(corr.get("actions") or [], default=str))}
            if corr.get("refused_actions"):
                rec["refused_actions"] = json.loads(json.dumps(corr["refused_actions"],
                                                               default=str))
            out.append(rec)
    return out


def _plain(obj: Any) -> Any:
    """Strings without quotes, backslashes or non-ASCII: extxyz mangles escapes in info."""
    if isinstance(obj, str):
        return "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else
                       ("'" if c == '"' else " ") for c in obj)
    if isinstance(obj, dict):
        return {_plain(str(k)): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def corrections_info(corrections: Sequence[Mapping[str, Any]]) -> str:
    """The corrections as a JSON string that survives an extxyz round trip in atoms.info."""
    return json.dumps(_plain(list(corrections)), separators=(",", ":"))


def stamp_label(out: Atoms, labeller: str, engine_version: str,
                corrections: Sequence[Mapping[str, Any]], t0: float) -> Atoms:
    """Write a DFT label's own record into ``out.info`` (its fingerprint, the engine's
    version, the corrections custodian applied, the wall time since ``t0``, a
    ``time.perf_counter()`` value) and return ``out``."""
    out.info["labeller"] = labeller
    out.info["engine_version"] = engine_version
    out.info["label_corrections"] = corrections_info(corrections)
    out.info["label_wall_s"] = round(time.perf_counter() - t0, 2)
    return out


def run_custodian(*, engine: str, jobs: Sequence[Any], handlers: Sequence[ErrorHandler],
                  validators: Sequence[Any], directory: Path, max_errors: int,
                  output_file: str, diagnose: Diagnose, stderr_file: str | None = None,
                  tail_cut: str | None = None, missing_hint: str = "") -> list[dict[str, Any]]:
    """Run ``jobs`` in ``directory``; return the corrections applied, or raise LabelError.

    ``diagnose(directory)`` reads the engine's output and says what went wrong in the
    engine's own terms and whether it is deterministic (permanent: cached, never paid
    for again) or not (a crash: tried again on the next run).
    """
    c = Custodian(list(handlers), list(jobs), list(validators), max_errors=max_errors,
                  max_errors_per_job=max_errors, polling_time_step=POLL_S,
                  monitor_freq=MONITOR_EVERY, directory=str(directory),
                  terminate_on_nonzero_returncode=True)

    def out_tail() -> str:
        parts = [tail(directory / output_file, cut=tail_cut)]
        if stderr_file and (err := tail(directory / stderr_file, 6)):
            parts.append(f"--- {stderr_file} ---\n{err}")
        return "\n".join(p for p in parts if p)

    def fail(what: str, permanent: bool | None = None) -> LabelError:
        summary, perm = diagnose(directory)
        rc = getattr(jobs[-1], "returncode", None) if jobs else None
        reason = f"{engine}: {what}" + (f" ({summary})" if summary else "")
        if rc not in (0, None):
            reason += f" (exit {rc})"
        return LabelError(reason, permanent=perm if permanent is None else permanent,
                          tail=out_tail(), corrections=corrections_of(c.run_log))

    try:
        c.run()
    except FileNotFoundError as err:
        raise LabelError(f"{engine} command not found: {err.filename!r}"
                         + (f" ({missing_hint})" if missing_hint else ""),
                         corrections=corrections_of(c.run_log)) from None
    except PermissionError as err:
        raise LabelError(f"{engine} command cannot be run: {err}",
                         corrections=corrections_of(c.run_log)) from None
    except ValidationError as err:
        raise fail(f"output failed {type(err.validator).__name__}") from None
    except NonRecoverableError as err:
        raise _unrecoverable(err.handler, fail) from None
    except ReturnCodeError as err:
        raise fail(str(err.message).replace(" Terminating...", "")) from None
    except MaxCorrectionsPerHandlerError as err:
        done = corrections_of(c.run_log)
        last = "; ".join(done[-1]["errors"]) if done else ""
        raise fail(f"still failing after {len(done)} correction(s) by "
                   f"{_handler_name(err.handler)}: {last}") from None
    except (MaxCorrectionsError, MaxCorrectionsPerJobError):
        raise fail(f"gave up after {len(corrections_of(c.run_log))} correction(s) "
                   "(max_corrections)") from None
    except CustodianError as err:  # any other custodian stop
        raise fail(err.message) from None
    last = c.run_log[-1] if c.run_log else {}
    if last.get("handler") is not None:  # a non-raising handler stopped the job
        raise _unrecoverable(last["handler"], fail)
    return corrections_of(c.run_log)


def _unrecoverable(handler: Any, fail: Callable[..., LabelError]) -> LabelError:
    name = _handler_name(handler)
    refused = getattr(handler, "refused", None)
    if refused:
        return fail(refused[-1], permanent=True)
    inner = getattr(handler, "handler", handler)
    if getattr(inner, "permanent_failure", False):
        errs = getattr(inner, "last_errors", None)
        return fail(f"{name}: " + ("; ".join(errs) if errs else "unfixable"), permanent=True)
    return fail(f"{name} found an error it cannot fix")


logging.getLogger("custodian").addHandler(logging.NullHandler())
