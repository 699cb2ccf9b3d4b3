"""A real one-node SLURM cluster for the tests (scripts/slurm_local.py), and helpers to
cancel its jobs the way an HPC cluster does (``scancel``, walltime).

The node declares more CPUs than the machine has (``--cpus``): the tests run a default
cluster and a DFT cluster of worker jobs side by side, and their jobs must start at once;
the work itself is light. A plain module, imported as ``slurm`` (like ``s3server``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm_local.py"
NODE_CPUS = 8


def unavailable() -> str | None:
    """Why no local SLURM cluster can run here, or None."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from slurm_local import available
    finally:
        sys.path.pop(0)
    return available()


@dataclass(frozen=True)
class Slurm:
    root: Path
    conf: str

    def env(self) -> dict[str, str]:
        return dict(os.environ, SLURM_CONF=self.conf)

    def jobs(self, state: str = "RUNNING", name: str | None = None) -> list[str]:
        """Job ids in ``state`` (oldest first), optionally only those named ``name``."""
        cmd = ["squeue", "-h", "-t", state, "-o", "%i %j"]
        out = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, check=True)
        rows = [ln.split() for ln in out.stdout.splitlines() if ln.strip()]
        return sorted((r[0] for r in rows if name is None or r[1] == name), key=int)

    def cancel(self, job: str) -> None:
        subprocess.run(["scancel", job], env=self.env(), check=True)

    def wait_for_jobs(self, n: int, timeout: float = 60.0, name: str | None = None
                      ) -> list[str]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            jobs = self.jobs(name=name)
            if len(jobs) >= n:
                return jobs
            time.sleep(0.3)
        raise AssertionError(f"fewer than {n} running jobs after {timeout:.0f} s: "
                             f"{self.jobs('all')}")

    def job_running(self, program: str, started_within_s: float | None = None) -> str | None:
        """The job of a ``program`` process running now (a one-node cluster: this machine's
        /proc), so a test cancels a job that is really mid-task. ``started_within_s`` keeps
        only processes that started that recently: one far from finishing, since a process
        that finishes between this look and the cancel makes a test of "no finished work is
        lost" a coin toss on the milliseconds before its result is stored."""
        now = float(Path("/proc/uptime").read_text().split()[0])
        tick = os.sysconf("SC_CLK_TCK")
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv0 = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
                if Path(argv0).name != program:
                    continue
                env = (proc / "environ").read_bytes().split(b"\0")
                # stat field 22 (start time in clock ticks), counted after "(comm)"
                started = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[19]) / tick
            except (OSError, IndexError, ValueError):
                continue
            if started_within_s is not None and now - started > started_within_s:
                continue
            for var in env:
                if var.startswith(b"SLURM_JOB_ID="):
                    return var.split(b"=", 1)[1].decode()
        return None

    def history(self) -> list[str]:
        """Every job id the controller still remembers (running, completed, cancelled)."""
        out = subprocess.run(["scontrol", "show", "job", "-o"], env=self.env(),
                             capture_output=True, text=True, check=False)
        return sorted((ln.split()[0].removeprefix("JobId=") for ln in out.stdout.splitlines()
                       if ln.startswith("JobId=")), key=int)


def start(root: Path) -> Slurm:
    subprocess.run([sys.executable, str(SCRIPT), "start", str(root), "--cpus", str(NODE_CPUS)],
                   check=True, stdout=subprocess.DEVNULL)
    return Slurm(root=root, conf=str(root / "slurm.conf"))


def stop(root: Path) -> None:
    subprocess.run([sys.executable, str(SCRIPT), "stop", str(root)], check=False)
