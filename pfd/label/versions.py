"""Which build of an engine will run: part of every DFT labeller's fingerprint.

Two QE or CP2K releases give slightly different numbers for the same input, so labels
from both must never share a cache key. The probe runs once per process and command.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import tempfile

from pfd.label.custodian_run import MPI_ENV
from pfd.threads import thread_env

UNKNOWN = "unknown"


def _probe(args: list[str], stdin: str | None, pattern: str, timeout_s: float) -> str:
    env = {**os.environ, **thread_env(1), **MPI_ENV}
    # in a throw-away directory: pw.x leaves a CRASH file behind when its input is empty
    with tempfile.TemporaryDirectory(prefix="pfd-version-") as tmp:
        try:
            out = subprocess.run(args, input=stdin, capture_output=True, text=True, env=env,
                                 timeout=timeout_s, check=False, cwd=tmp)
        except (OSError, subprocess.TimeoutExpired):
            return UNKNOWN
    m = re.search(pattern, out.stdout + out.stderr)
    return m.group(1).strip() if m else UNKNOWN


@functools.lru_cache(maxsize=16)
def qe_version(command: str) -> str:
    """pw.x prints ``Program PWSCF v.6.7MaX starts`` before it reads (an empty) input."""
    return _probe(shlex.split(command), "", r"Program PWSCF\s+v\.?\s*(\S+)", 30.0)


@functools.lru_cache(maxsize=16)
def cp2k_version(command: str) -> str:
    return _probe([*shlex.split(command), "--version"], None, r"CP2K version\s+(\S+)", 30.0)
