"""The way users operate pfd on a cluster, done for real on 127.0.0.1.

deployments/local.sh starts a Prefect server, the work pool, the deployments of
prefect.yaml and a process worker.  The test SIGKILLs the worker (and the flow run it
started) once the initial DFT set is stored, restarts the worker, runs
`prefect deployment run 'pfd/si-demo' --watch` at tiny scale to Completed, and checks
that no DFT input was computed twice.  Headless Chromium then opens the UI on the
finished run, and `local.sh stop` must leave no process behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from procs import kill_tree
from requires import needs
from s3server import free_port

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / "deployments" / "local.sh"
BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium")

pytestmark = [pytest.mark.slow,
              needs(shutil.which("pw.x") is not None, "pw.x not installed")]


def _sh(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(LOCAL), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _prefect(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "prefect"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


_API_QUERY = """
import json, sys
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterParentTaskRunId)
with get_client(sync_client=True) as c:
    dep = c.read_deployment_by_name("pfd/si-demo")
    runs = c.read_flow_runs(flow_run_filter=FlowRunFilter(
        parent_task_run_id=FlowRunFilterParentTaskRunId(is_null_=True)))
    arts = c.read_artifacts(artifact_filter=ArtifactFilter(
        key=ArtifactFilterKey(any_=["pfd-deployed-report"])))
print(json.dumps({
    "report_artifacts": [{"id": str(a.id), "flow_run_id": str(a.flow_run_id)} for a in arts],
    "schedules": [{"cron": getattr(s.schedule, "cron", None), "active": s.active}
                  for s in dep.schedules],
    "runs": [{"id": str(r.id), "name": r.name, "state": r.state.name if r.state else None,
              "deployment_id": str(r.deployment_id)} for r in runs],
    "deployment_id": str(dep.id)}))
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("deploy")
    port = free_port()
    env = dict(os.environ)
    env.update(PFD_PREFECT_HOME=str(tmp / "prefect-home"), PFD_PREFECT_PORT=str(port),
               PFD_VENV_BIN=str(BIN), PREFECT_HOME=str(tmp / "prefect-home"),
               PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
               PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PFD_TEST_PW_LOG=str(tmp / "pw-calls.log"))
    wrapper = tmp / "pw-counting.sh"
    wrapper.write_text('#!/usr/bin/env bash\nsha256sum pw.in | cut -c1-16 >> '
                       '"$PFD_TEST_PW_LOG"\nexec pw.x "$@"\n')
    wrapper.chmod(0o755)
    # orchestration is under test here, not what the run computes (tests/test_e2e.py)
    cfg = yaml.safe_load((ROOT / "tests/data/orchestration.yaml").read_text())
    cfg["run_id"] = "deployed"
    cfg["labeller"]["qe"]["command"] = str(wrapper)
    cfg_path = tmp / "deployed.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    store = tmp / "store"
    params = json.dumps({"config": str(cfg_path), "store": str(store),
                         "workdir": str(tmp / "work")})
    state = tmp / "prefect-home" / "pfd-local"

    started = _sh(env, "start")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        # 1) a deployment run, killed with its worker after the initial DFT set is stored
        first = _prefect(env, "deployment", "run", "pfd/si-demo", "--params", params)
        assert first.returncode == 0, first.stdout + first.stderr
        marker = store / "runs/deployed/init/record.json"
        deadline = time.time() + 900
        while not marker.exists() and time.time() < deadline:
            time.sleep(0.5)
        assert marker.exists(), (state / "worker.log").read_text()[-3000:]
        killed = kill_tree(int((state / "worker.pid").read_text()))
        calls_killed = (tmp / "pw-calls.log").read_text().split()

        # 2) restart the worker (the script is idempotent) and run the deployment again
        restarted = _sh(env, "start")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        t0 = time.time()
        watched = _prefect(env, "deployment", "run", "pfd/si-demo", "--params", params,
                           "--watch", timeout=1800)
        api = subprocess.run([sys.executable, "-c", _API_QUERY], env=env,
                             capture_output=True, text=True, timeout=120)
        assert api.returncode == 0, api.stderr[-2000:]
        yield {"tmp": tmp, "env": env, "port": port, "store": store, "state": state,
               "killed_procs": killed, "calls_killed": calls_killed,
               "calls_final": (tmp / "pw-calls.log").read_text().split(),
               "watched": watched, "watch_s": time.time() - t0,
               "api": json.loads(api.stdout.strip().splitlines()[-1])}
    finally:
        stopped = _sh(env, "stop")
        (tmp / "stop.log").write_text(stopped.stdout + stopped.stderr)


def test_deployment_run_completes_after_worker_kill(stack: dict[str, Any]) -> None:
    watched = stack["watched"]
    assert watched.returncode == 0, watched.stdout[-3000:] + watched.stderr[-3000:]
    assert "Completed" in watched.stdout
    assert stack["killed_procs"] >= 2  # the worker and the flow-run process under it
    run = json.loads((stack["store"] / "runs/deployed/run.json").read_text())
    assert run["status"] == "completed"
    assert (stack["store"] / "runs/deployed/distill/student/frozen_model.pth").is_file()
    final = [r for r in stack["api"]["runs"] if r["state"] == "Completed"]
    assert any(r["deployment_id"] == stack["api"]["deployment_id"] for r in final)


def test_no_dft_input_repeated_after_worker_kill(stack: dict[str, Any]) -> None:
    killed, final = stack["calls_killed"], stack["calls_final"]
    assert len(killed) >= 3  # the initial set was paid for before the kill
    assert len(set(final)) == len(final), "a DFT input was computed twice"
    assert final[:len(killed)] == killed


def test_schedule_declared_and_visible(stack: dict[str, Any]) -> None:
    assert {"cron": "0 3 * * 1", "active": False} in stack["api"]["schedules"]


@needs(CHROMIUM is not None, "chromium not installed (install-system-deps.sh)")
def test_ui_shows_the_run_and_its_artifacts(stack: dict[str, Any]) -> None:
    """Headless Chromium renders the finished run's report artifact page of the UI."""
    done = next(r for r in stack["api"]["runs"]
                if r["state"] == "Completed" and r["deployment_id"] == stack["api"][
                    "deployment_id"])
    art = next(a for a in stack["api"]["report_artifacts"] if a["flow_run_id"] == done["id"])
    url = f"http://127.0.0.1:{stack['port']}/artifacts/artifact/{art['id']}"
    shot = stack["tmp"] / "ui-report.png"
    base = [str(CHROMIUM), "--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--window-size=1400,1400", "--hide-scrollbars",
            "--virtual-time-budget=30000", f"--user-data-dir={stack['tmp'] / 'chromium'}"]
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True,
                         timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert done["name"] in dom.stdout  # the page shows which flow run made the artifact
    assert "Distillation" in dom.stdout and "F RMSE" in dom.stdout  # the markdown rendered
    assert dom.stdout.count("data:image/png;base64,") >= 3  # with its plots inline
    subprocess.run([*base, f"--screenshot={shot}", url], capture_output=True, timeout=180,
                   check=True)
    assert shot.stat().st_size > 20_000
    if os.environ.get("PFD_SAVE_UI_SCREENSHOT"):
        shutil.copy(shot, os.environ["PFD_SAVE_UI_SCREENSHOT"])


def test_stop_leaves_nothing_running(stack: dict[str, Any]) -> None:
    pids = [int((stack["state"] / f"{n}.pid").read_text()) for n in ("server", "worker")]
    out = _sh(stack["env"], "stop")
    assert out.returncode == 0, out.stderr
    assert "stopped" in out.stdout
    status = _sh(stack["env"], "status")
    assert "server: stopped" in status.stdout and "worker: stopped" in status.stdout
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
