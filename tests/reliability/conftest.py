"""Reliability suite fixtures. ``PFD_RELIABILITY_RECORD=1`` writes the fault ledger to
benchmarks/results/reliability.json and the table in docs/reliability.md."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import sys
from typing import Any

import pytest
from helpers import (
    LEDGER,
    ROOT,
    SECRET,
    ReferenceRun,
    cli_env,
    ledger_dicts,
    pfd,
    pw_calls,
    run_setup,
)
from requires import missing

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


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory: pytest.TempPathFactory,
                  moto_endpoint: str) -> ReferenceRun:
    """One uninterrupted mini run into S3 (moto), with credentials that must not leak."""
    if shutil.which("pw.x") is None:
        missing("pw.x not installed")
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
