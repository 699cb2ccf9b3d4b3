"""Shared pieces of the fault-injection tests: the real CLI, wrapper engines, process-tree
kills, and the ledger of faults whose totals go into docs/reliability.md."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from procs import kill_tree, wait_for  # noqa: F401 - re-exported to the tests here

from pfd.frames import frame_hash
from pfd.store import ArtifactStore
from pfd.threads import thread_env

ROOT = Path(__file__).resolve().parents[2]
PFD = str(Path(sys.executable).parent / "pfd")
MINI = Path(__file__).resolve().parent / "data" / "mini.yaml"
# a credential that must never appear anywhere a run writes or prints
SECRET = "pfd-rel-S3CRET-9b1f7c2e"


@dataclass
class Fault:
    """One injected fault and what it cost: the row of docs/reliability.md's table."""

    test: str
    fault: str
    injected: int = 1
    runs_completed: int = 0
    frames_lost: int = 0
    dft_repeated: int = 0
    outcome: str = ""


LEDGER: list[Fault] = []


def record(fault: Fault) -> None:
    LEDGER.append(fault)


def ledger_dicts() -> list[dict[str, Any]]:
    return [asdict(f) for f in LEDGER]


# --------------------------------------------------------------------------- the CLI
def cli_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PFD_TEST_PW_LOG=str(tmp / "pw-calls.log"), **thread_env(1), **extra)
    for var in ("PREFECT_API_URL", "PFD_STORE"):
        env.pop(var, None)
    return env


def check_command() -> str:
    """``pfd check`` (the name after the rename), or ``validate`` while it is not there yet."""
    out = subprocess.run([PFD, "--help"], capture_output=True, text=True, timeout=60)
    return "check" if "│ check " in out.stdout or "\n  check " in out.stdout else "validate"


def pfd(args: list[str], cwd: Path, env: dict[str, str],
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PFD, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


# --------------------------------------------------------------------------- wrappers
def write_script(path: Path, body: str) -> str:
    path.write_text("#!/usr/bin/env bash\n" + body.strip() + "\n")
    path.chmod(0o755)
    return str(path)


# Logs the frame of every real DFT call (the scratch directory starts with the frame
# hash), then runs pw.x. The version probe (no arguments) is not a DFT call.
COUNTING = """
if [ "$1" = -in ]; then basename "$PWD" | cut -c1-16 >> "$PFD_TEST_PW_LOG"; fi
{before}
exec pw.x "$@"
"""


def counting_wrapper(tmp: Path, before: str = "") -> str:
    return write_script(tmp / "pw-counting.sh", COUNTING.format(before=before))


def pw_calls(tmp: Path) -> list[str]:
    log = tmp / "pw-calls.log"
    return log.read_text().split() if log.exists() else []


def mini_config(tmp: Path, command: str, **labeller: Any) -> Path:
    cfg = yaml.safe_load(MINI.read_text())
    cfg["labeller"]["qe"]["command"] = command
    cfg["labeller"].update(labeller)
    path = tmp / "mini.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# --------------------------------------------------------------------------- killing
def dft_frames(store: ArtifactStore, run_id: str) -> list[tuple[str, str, float]]:
    """(dataset, frame hash, energy) of every DFT-labelled frame of a run, sorted."""
    out = []
    for key in store.list(f"runs/{run_id}/"):
        if key.endswith("labelled.extxyz"):
            for a in store.get_frames(key):
                out.append((key.split("/")[2], frame_hash(a),
                            round(float(a.get_potential_energy()), 6)))
    return sorted(out)


def cached_hashes(store: ArtifactStore, suffix: str = ".extxyz") -> set[str]:
    """Frame hashes (16-char prefixes) with a stored label (or a stored permanent failure)."""
    return {k.rsplit("/", 1)[1][:16] for k in store.list("labels/") if k.endswith(suffix)
            and (suffix != ".extxyz" or not k.endswith(".failed.json"))}


# --------------------------------------------------------------------------- runs
def starved_frame_prefix(config: Path) -> str:
    """The hash prefix of one perturbed initial frame: the wrappers starve its SCF, so every
    whole run here also carries a DFT failure it must survive under the failure limit."""
    from pfd.config import load_config
    from pfd.frames import frame_hash
    from pfd.steps import initial_frames

    return frame_hash(initial_frames(load_config(config))[2])[:16]


# every call sleeps 1 s (a window to kill in), and one frame's SCF gets 1 step: a real
# unconverged pw.x run that custodian's fixes cannot rescue (the wrapper undoes them)
STARVE = """
sleep 1
case "$(basename "$PWD")" in {prefix}*)
  sed -i -E 's/^( *electron_maxstep *= *).*/\\1 1/' pw.in ;;
esac
"""


def run_setup(tmp: Path) -> tuple[Path, str]:
    """(config, starved frame prefix) for a whole mini run under the counting wrapper."""
    cfg = mini_config(tmp, "pw.x", max_failure_fraction=0.3)
    prefix = starved_frame_prefix(cfg)
    cfg = mini_config(tmp, counting_wrapper(tmp, STARVE.format(prefix=prefix)),
                      max_failure_fraction=0.3)
    return cfg, prefix


@dataclass
class ReferenceRun:
    tmp: Path
    store: ArtifactStore
    env: dict[str, str]
    out: subprocess.CompletedProcess[str]
    starved: str
    calls: list[str]
