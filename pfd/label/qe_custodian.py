"""custodian for Quantum ESPRESSO ``pw.x``: a Job, the handlers for its real failures, a
validator.

custodian ships nothing for QE. The failures pw.x really has when labelling are few:
the SCF hits ``electron_maxstep`` ("convergence NOT achieved": fixed by gentler mixing
and more steps, never accepted as a label), the process dies without an answer (an MPI
start-up race, a killed node: rerun as is), and deterministic input errors ("Error in
routine": not retried, reported).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

from custodian.custodian import ErrorHandler, Job, Validator

from pfd.label.custodian_run import TIMEOUT_MARKER, OwnProcessJob

NOT_CONVERGED = "convergence NOT achieved"
JOB_DONE = "JOB DONE"
INPUT_ERROR = "Error in routine"
QE_DEFAULT_BETA, QE_DEFAULT_MAXSTEP = 0.7, 100


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# --------------------------------------------------------------------------- namelists
def _block(text: str, namelist: str) -> re.Match[str] | None:
    return re.search(rf"(?ims)^[ \t]*&{namelist}\b.*?^[ \t]*/[ \t]*$", text)


def get_namelist_value(text: str, namelist: str, key: str) -> str | None:
    blk = _block(text, namelist)
    if blk is None:
        return None
    m = re.search(rf"(?im)^[ \t]*{key}[ \t]*=[ \t]*([^\s,]+)", blk.group(0))
    return m.group(1).strip("'\"") if m else None


def set_namelist_value(text: str, namelist: str, key: str, value: float | int) -> str:
    """Set ``key = value`` inside ``&namelist ... /`` (added before the ``/`` if absent)."""
    blk = _block(text, namelist)
    if blk is None:
        raise ValueError(f"pw.x input has no &{namelist} namelist")
    body = blk.group(0)
    line = f"   {key} = {value}"
    pat = rf"(?im)^[ \t]*{key}[ \t]*=.*$"
    if re.search(pat, body):
        new = re.sub(pat, line, body, count=1)
    else:
        head, _, _ = body.rpartition("/")
        new = f"{head.rstrip()}\n{line}\n/"
    return text[: blk.start()] + new + text[blk.end():]


# --------------------------------------------------------------------------- job
class PwJob(OwnProcessJob, Job):
    """One pw.x process in its own session; stdout is the output custodian inspects."""

    def __init__(self, command: list[str], input_file: str = "pw.in",
                 output_file: str = "pw.out", stderr_file: str = "pw.err",
                 env_overrides: dict[str, str] | None = None,
                 timeout_s: float | None = None) -> None:
        self.command = list(command)
        self.input_file = input_file
        self.output_file = output_file
        self.stderr_file = stderr_file
        self.env_overrides = dict(env_overrides or {})
        self.timeout_s = timeout_s

    def setup(self, directory: str = "./") -> None:
        self._clear_timeout_marker(directory)

    def run(self, directory: str = "./") -> subprocess.Popen[bytes]:
        return self._start([*self.command, "-in", self.input_file], directory,
                           self.output_file, self.stderr_file)

    def postprocess(self, directory: str = "./") -> None:
        return None



# --------------------------------------------------------------------------- handlers
class PwScfHandler(ErrorHandler):
    """SCF not converged within electron_maxstep: halve mixing_beta, double the steps.

    Mixing and step limits change how the SCF reaches its answer, not the answer, so the
    labeller fingerprint (and the cache) stay the same. ``max_num_corrections`` ladders
    later are refused and the frame becomes a permanent, cached failure.
    """

    is_monitor = False
    raise_on_max = True

    def __init__(self, input_file: str = "pw.in", output_file: str = "pw.out",
                 max_num_corrections: int = 2, min_beta: float = 0.05,
                 max_steps: int = 1000) -> None:
        self.input_file = input_file
        self.output_file = output_file
        self.max_num_corrections = max_num_corrections
        self.min_beta = min_beta
        self.max_steps = max_steps

    def check(self, directory: str = "./") -> bool:
        return NOT_CONVERGED in _read(Path(directory) / self.output_file)

    def correct(self, directory: str = "./") -> dict[str, Any]:
        path = Path(directory) / self.input_file
        text = path.read_text()
        beta = float(get_namelist_value(text, "electrons", "mixing_beta") or QE_DEFAULT_BETA)
        steps = int(get_namelist_value(text, "electrons", "electron_maxstep")
                    or QE_DEFAULT_MAXSTEP)
        errors = [f"SCF not converged in {steps} steps (mixing_beta={beta:g})"]
        if beta <= self.min_beta and steps >= self.max_steps:
            return {"errors": errors, "actions": []}
        new_beta = max(self.min_beta, round(beta / 2, 4))
        new_steps = min(self.max_steps, steps * 2)
        text = set_namelist_value(text, "electrons", "mixing_beta", new_beta)
        text = set_namelist_value(text, "electrons", "electron_maxstep", new_steps)
        path.write_text(text)
        return {"errors": errors, "actions": [{"dict": self.input_file, "action": {"_set": {
            "electrons": {"mixing_beta": new_beta, "electron_maxstep": new_steps}}}}]}


class PwCrashHandler(ErrorHandler):
    """pw.x ended without an answer and without saying why: rerun it unchanged.

    Only crashes qualify: an unconverged SCF, a pw.x error message or a timeout are
    deterministic and left to the other handlers and the validator.
    """

    is_monitor = False
    raise_on_max = True

    def __init__(self, output_file: str = "pw.out", stderr_file: str = "pw.err",
                 max_num_corrections: int = 2) -> None:
        self.output_file = output_file
        self.stderr_file = stderr_file
        self.max_num_corrections = max_num_corrections

    def check(self, directory: str = "./") -> bool:
        d = Path(directory)
        if (d / TIMEOUT_MARKER).is_file():
            return False
        text = _read(d / self.output_file)
        return not any(s in text for s in (JOB_DONE, NOT_CONVERGED, INPUT_ERROR))

    def correct(self, directory: str = "./") -> dict[str, Any]:
        d = Path(directory)
        last = (_read(d / self.stderr_file).strip().splitlines()
                or _read(d / self.output_file).strip().splitlines() or ["no output"])[-1]
        time.sleep(0.5 * (self.n_applied_corrections + 1))  # let a start-up race clear
        return {"errors": [f"pw.x stopped without a result: {last.strip()[:200]}"],
                "actions": [{"action": "rerun unchanged"}]}


class PwOutputValidator(Validator):
    """A label needs a finished run, a converged SCF, forces and stress."""

    def __init__(self, output_file: str = "pw.out") -> None:
        self.output_file = output_file

    def check(self, directory: str = "./") -> bool:
        text = _read(Path(directory) / self.output_file)
        return (JOB_DONE not in text or NOT_CONVERGED in text
                or "Forces acting on atoms" not in text or "total   stress" not in text)


def diagnose(directory: Path, output_file: str = "pw.out") -> tuple[str, bool]:
    """What pw.x said went wrong, and whether running it again could change that."""
    text = _read(directory / output_file)
    if NOT_CONVERGED in text:
        m = re.search(r"convergence NOT achieved after\s+(\d+)", text)
        steps = m.group(1) if m else "?"
        return f"SCF not converged in {steps} steps", True
    if INPUT_ERROR in text:
        m = re.search(r"(?s)Error in routine\s+(.*?)\n\s*%{5,}", text)
        msg = " ".join(m.group(1).split()) if m else "pw.x input error"
        return f"pw.x error: {msg}", True
    if not text.strip():
        return "no output", False
    return "", False
