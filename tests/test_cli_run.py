"""``pfd run`` (flows/cli.py) around the flow: a Prefect API that does not start in time is
one line and exit 1, not a traceback, and pfd gives a first start more than Prefect's 20 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PFD = str(Path(sys.executable).parent / "pfd")


@pytest.mark.slow
def test_prefect_api_that_does_not_start_is_one_line(tmp_path: Path) -> None:
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="0")
    env.pop("PREFECT_API_URL", None)
    out = subprocess.run([PFD, "run", str(ROOT / "tests/data/tiny.yaml"), "--store",
                          str(tmp_path / "store"), "--workdir", str(tmp_path / "work")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    stops = [ln for ln in out.stderr.splitlines() if ln.startswith("pfd run stopped:")]
    assert len(stops) == 1, out.stderr[-2000:]
    assert "did not answer within 0 s" in stops[0]
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in stops[0]
    assert not (tmp_path / "store" / "runs").exists()  # nothing was started


def test_pfd_run_gives_a_first_prefect_start_minutes() -> None:
    from flows import cli

    assert cli.EPHEMERAL_TIMEOUT_S >= 120  # Prefect's default 20 s failed a fresh make demo
    assert cli.EPHEMERAL_TIMEOUT_VAR == "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
