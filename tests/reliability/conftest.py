"""Reliability suite fixtures. ``PFD_RELIABILITY_RECORD=1`` writes the fault ledger to
benchmarks/results/reliability.json and the table in docs/reliability.md."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    LEDGER,
    ROOT,
    SECRET,
    cli_env,
    counting_wrapper,
    ledger_dicts,
    mini_config,
    pfd,
    pw_calls,
)

from pfd.store import ArtifactStore

_START, _END = "<!-- reliability:start -->", "<!-- reliability:end -->"


def _table(rows: list[dict[str, object]]) -> str:
    lines = ["| test | fault injected | faults | runs completed | frames lost | "
             "DFT calls repeated | outcome |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['test']}` | {r['fault']} | {r['injected']} | {r['runs_completed']} "
                     f"| {r['frames_lost']} | {r['dft_repeated']} | {r['outcome']} |")
    tot = {k: sum(int(r[k]) for r in rows)  # type: ignore[call-overload]
           for k in ("injected", "runs_completed", "frames_lost", "dft_repeated")}
    lines.append(f"| **total** | | **{tot['injected']}** | **{tot['runs_completed']}** | "
                 f"**{tot['frames_lost']}** | **{tot['dft_repeated']}** | |")
    return "\n".join(lines)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not LEDGER or os.environ.get("PFD_RELIABILITY_RECORD") != "1":
        return
    rows = ledger_dicts()
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    result = {"name": "reliability", "date": now, "machine": {
        "node": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "command": " ".join(["pytest", *sys.argv[1:]]), "failed_tests": session.testsfailed,
        "faults": rows}
    out = ROOT / "benchmarks" / "results" / "reliability.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    doc = ROOT / "docs" / "reliability.md"
    if doc.exists() and _START in (text := doc.read_text()):
        head, rest = text.split(_START, 1)
        _, tail = rest.split(_END, 1)
        body = (f"\nMeasured {now} on {platform.node()} ({os.cpu_count()} CPUs), "
                f"`{result['command']}`, {session.testsfailed} failed test(s):\n\n"
                f"{_table(rows)}\n")
        doc.write_text(head + _START + body + _END + tail)


# --------------------------------------------------------------------------- runs
def starved_frame_prefix(config: Path) -> str:
    """The hash prefix of one perturbed initial frame: the wrappers starve its SCF, so every
    whole run here also carries a DFT failure it must survive under the failure limit."""
    from pfd.config import load_config
    from pfd.frames import frame_hash
    from pfd.perturb import perturb
    from pfd.structures import load_structures

    cfg = load_config(config)
    structures = load_structures(cfg)
    p = cfg.init.perturb
    base = [a for name in cfg.init.structures for a in structures[name]]
    frames = perturb(base, p.n_per_structure, p.atom_displacement_A, p.cell_strain,
                     p.displacement_style, p.seed, p.include_unperturbed,
                     atom_fraction=p.atom_fraction, supercell=p.supercell)
    return frame_hash(frames[2])[:16]


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


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory: pytest.TempPathFactory,
                  moto_endpoint: str) -> ReferenceRun:
    """One uninterrupted mini run into S3 (moto), with credentials that must not leak."""
    if shutil.which("pw.x") is None:
        pytest.skip("pw.x not installed")
    tmp = tmp_path_factory.mktemp("reference")
    cfg, starved = run_setup(tmp)
    env = cli_env(tmp, AWS_ACCESS_KEY_ID="pfd-rel-key-id", AWS_SECRET_ACCESS_KEY=SECRET,
                  AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE="/nonexistent",
                  AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
                  PFD_S3_ENDPOINT_URL=moto_endpoint)
    for var in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        env.pop(var, None)
    out = pfd(["run", str(cfg), "--store", "s3://rel-ref/mini", "--workdir", str(tmp / "work")],
              tmp, env, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    from pfd.store import S3Store

    store = S3Store("rel-ref", "mini", endpoint_url=moto_endpoint,
                    client=_client(moto_endpoint))
    return ReferenceRun(tmp, store, env, out, starved, pw_calls(tmp))


def _client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="pfd-rel-key-id", aws_secret_access_key=SECRET)
