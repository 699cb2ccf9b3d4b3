"""One whole PFD run at tiny scale through the real CLI: killed after the initial DFT
labels, resumed, then re-run once more.

Real pw.x, real SevenNet fine-tuning, real Dask workers, real DeePMD training, Prefect's
ephemeral API. A counting wrapper around pw.x proves that no frame is labelled twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from requires import needs

from pfd import frames as fr
from pfd.store import LocalStore

ROOT = Path(__file__).resolve().parents[1]
PFD = str(Path(sys.executable).parent / "pfd")

pytestmark = [pytest.mark.slow,
              needs(shutil.which("pw.x") is not None, "pw.x not installed")]


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PFD_TEST_PW_LOG=str(tmp / "pw-calls.log"))
    env.pop("PREFECT_API_URL", None)
    return env


def counting_pw(tmp: Path) -> Path:
    """A pw.x wrapper that logs a hash of the physical input (pw.in) of every DFT call to
    ``$PFD_TEST_PW_LOG`` (set by :func:`_env`), then runs real pw.x."""
    wrapper = tmp / "pw-counting.sh"
    wrapper.write_text('#!/usr/bin/env bash\nsha256sum pw.in | cut -c1-16 >> '
                       '"$PFD_TEST_PW_LOG"\nexec pw.x "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def counted_run(tmp: Path, cfg: dict[str, Any], name: str) -> tuple[list[str], Path,
                                                                   dict[str, str]]:
    """``cfg`` written to ``tmp`` with pw.x behind :func:`counting_pw`: the ``pfd run``
    command, its store and its environment."""
    cfg["labeller"]["qe"]["command"] = str(counting_pw(tmp))
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    store = tmp / "store"
    return ([PFD, "run", str(path), "--store", str(store), "--workdir", str(tmp / "work")],
            store, _env(tmp))


def _pw_calls(tmp: Path) -> list[str]:
    log = tmp / "pw-calls.log"
    return log.read_text().split() if log.exists() else []


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("e2e")
    cfg = yaml.safe_load((ROOT / "tests/data/tiny.yaml").read_text())
    # stage 1 converges (any model is within 5 eV/Å), stage 2 cannot (0.01 eV/Å): both
    # ways a stage ends, and what each does with its last labels
    cfg["stages"][0]["converge"]["force_rmse_eV_A"] = 5.0
    cmd, store, env = counted_run(tmp, cfg, "tiny")

    # 1) start, and kill the whole process tree once the initial DFT set is stored
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    marker = store / "runs/tiny/init/record.json"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the first run never finished its initial labelling"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    calls_killed = _pw_calls(tmp)

    # 2) rerun to completion
    t0 = time.time()
    done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    calls_resumed = _pw_calls(tmp)
    resumed_s = time.time() - t0
    st = LocalStore(store)
    student_key = "runs/tiny/distill/student/frozen_model.pth"
    before = {"student_sha": hashlib.sha256(st.get_bytes(student_key)).hexdigest(),
              "student_mtime": (store / student_key).stat().st_mtime_ns,
              "keys": set(st.list("runs/tiny/"))}

    # 3) rerun a finished run: must be a no-op for DFT and training
    noop_started = datetime.now(UTC).isoformat()
    t0 = time.time()
    again = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    return {"tmp": tmp, "store": st, "env": env, "stdout": done.stdout, "before": before,
            "calls_killed": calls_killed, "calls_resumed": calls_resumed,
            "calls_final": _pw_calls(tmp), "resumed_s": resumed_s,
            "noop_s": time.time() - t0, "noop_stdout": again.stdout,
            "noop_started": noop_started}


def test_resume_labels_no_frame_twice(run: dict[str, Any]) -> None:
    killed, resumed = run["calls_killed"], run["calls_resumed"]
    st = run["store"]
    n_init = len(st.get_frames("runs/tiny/init/labelled.extxyz"))
    assert len(killed) >= n_init == 3  # every initial frame was paid for before the kill
    new = resumed[len(killed):]
    assert not set(new) & set(killed), "a frame labelled before the kill was labelled again"
    assert len(set(resumed)) == len(resumed), "some DFT input was computed twice"
    assert run["calls_final"] == resumed, "re-running a finished run called DFT again"


def test_store_holds_every_artifact(run: dict[str, Any]) -> None:
    st = run["store"]
    keys = set(st.list("runs/tiny/"))
    for k in ["config.json", "run.json", "init/labelled.extxyz", "init/perturbed.extxyz",
              "stage-01/iter-00/selected.extxyz", "stage-01/iter-00/labelled.extxyz",
              "stage-01/iter-00/test.json", "stage-01/iter-00/record.json",
              "stage-02/iter-00/record.json", "distill/synthetic.extxyz",
              "distill/student/frozen_model.pth", "distill/student/pfd_model.json",
              "distill/test_student_vs_dft.json", "report/summary.md",
              "report/force_parity.png", "report/iterations.png",
              "report/student_lcurve.png", "teacher.json"]:
        assert f"runs/tiny/{k}" in keys, k
    assert st.get_json("runs/tiny/run.json")["status"] == "completed"
    png = st.get_bytes("runs/tiny/report/force_parity.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # the init set: 1 unperturbed + 2 perturbed cells, all labelled with forces AND stress
    init = st.get_frames("runs/tiny/init/labelled.extxyz")
    assert len(init) == 3 and all(fr.stress(a) is not None for a in init)
    teacher = st.get_json("runs/tiny/teacher.json")["model"]
    assert st.exists(f"{teacher}/checkpoint_best.pth")


def test_iteration_records_are_consistent(run: dict[str, Any]) -> None:
    st = run["store"]
    from pfd.run_store import status_rows

    rows = status_rows(st, "tiny")
    assert [(r["stage"], r["iter"]) for r in rows] == [(1, 0), (2, 0)]
    for r in rows:
        assert r["explored"] > 0
        assert 0 < r["selected"] <= 2
        assert r["labelled"] + r["failed"] == r["selected"]
        assert r["labelled"] == len(st.get_frames(r["dataset"]))
        assert np.isfinite(r["force_rmse_eV_A"]) and r["force_rmse_eV_A"] > 0
    # stage 1's 5 eV/Å holds at once; stage 2's 0.01 eV/Å is deliberately unreachable
    assert [r["converged"] for r in rows] == [True, False]
    # 2 trajectories × (40 steps / sample every 10) = 8 frames in stage 1
    assert rows[0]["explored"] == 8
    # the labels of the converged stage 1 are paid for: stage 2's model trained on them
    # (stage 1's own model did not: it was tested on them), and the teacher, retrained
    # after stage 2 ran out of iterations, on every labelled set
    init, d1, d2 = ("runs/tiny/init/labelled.extxyz", rows[0]["dataset"], rows[1]["dataset"])
    summary = {r["stage"]: st.get_json(f"{r['model']}/pfd_model.json")["pfd_summary"]
               for r in rows}
    assert summary[1]["datasets"] == [init]
    assert summary[2]["datasets"] == sorted([init, d1])
    assert sorted(st.get_json("runs/tiny/teacher.json")["datasets"]) == sorted([init, d1, d2])
    # the report warns loudly about non-convergence
    assert "did NOT converge" in st.get_text("runs/tiny/report/summary.md")
    # the forgetting check: each M_i against SevenNet-0 on replay frames (both structures
    # × 2 volumes × 2 rattled copies, foundation-labelled once), measured, no bounds set
    checks = [st.get_json(f"{r['dataset'].rsplit('/', 1)[0]}/retention.json") for r in rows]
    assert checks[0]["replay"] == checks[1]["replay"]
    assert len(st.get_frames(checks[0]["replay"])) == 8
    assert set(checks[0]["by_structure"]) == {"diamond", "vacancy"}
    for r, c in zip(rows, checks, strict=True):
        assert r["retention_force_drift_eV_A"] == c["force_drift_eV_A"] > 0
        assert np.isfinite(r["retention_energy_drift_meV_atom"]) and c["exceeded"] == []
        # read against SevenNet-0's own error on the DFT frames this M_i trained on
        assert c["foundation_vs_dft"]["force_rmse_eV_A"] > 0
        assert r["retention_force_drift_ratio"] == pytest.approx(
            c["force_drift_eV_A"] / c["foundation_vs_dft"]["force_rmse_eV_A"])
    assert checks[0]["foundation_vs_dft"]["datasets"] == ["runs/tiny/init/labelled.extxyz"]


def st_calls(run: dict[str, Any]) -> dict[str, dict[str, int]]:
    from pfd.run_store import force_call_totals

    return force_call_totals(run["store"], "tiny")


def test_status_command_prints_table(run: dict[str, Any]) -> None:
    out = subprocess.run([PFD, "status", "tiny", "--store", str(run["store"].url)],
                         env=run["env"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "run tiny: completed"
    assert lines[1].startswith("Prefect flow run: ")  # which flow run did the work
    assert lines[2].startswith("| stage | iter | explored | filtered | selected | labelled")
    assert "| F RMSE eV/Å | F drift eV/Å | drift / found. DFT err | E drift meV/atom |" \
        in lines[2]
    stages = lines[:lines.index("distillation:")]
    data = [ln for ln in stages if ln.startswith("| 1 |") or ln.startswith("| 2 |")]
    assert len(data) == 2
    assert "distillation:" in out.stdout and "| student | dft |" in out.stdout
    # force calls: one per MD step plus the start, per trajectory (none stopped early):
    # stage 1 two 40-step diamond runs, stage 2 one vacancy run; distillation 2 × 2 × 60
    calls = st_calls(run)
    assert calls["explore"] == {"trajectories": 3, "force_calls": 3 * 41,
                                "atom_steps": 2 * 41 * 8 + 41 * 7}
    assert calls["distill"] == {"trajectories": 4, "force_calls": 4 * 61,
                                "atom_steps": 2 * 61 * 8 + 2 * 61 * 7}
    # refinement: the student's MD at 500, 1000 and 1.2 × 1000 K on both structures, in
    # two rounds (one retrain, then the final measurement); the teacher labels only
    # frames: 12 DFT-derived (6 configurations + 1 copy each) + 2 × 72 student frames
    assert calls["distill-student"] == {"trajectories": 12, "force_calls": 12 * 61,
                                        "atom_steps": 2 * 3 * 61 * (8 + 7)}
    assert calls["distill-teacher-labels"]["force_calls"] == 12 + 2 * 72
    assert calls["distill-teacher-labels"]["trajectories"] == 0
    assert ("model force calls (MD steps + starts, or frames labelled): explore 123 in 3 "
            "trajectories") in out.stdout
    assert "distill-teacher-labels 156 (" in out.stdout
    assert "Student training frames by kind: dft_perturbed 6, dft_relabel 6, teacher_md 48, " \
        "student_md 10." in out.stdout
    assert "DFT audit on 2 frames of the final student's own MD" in out.stdout
    missing = subprocess.run([PFD, "status", "nope", "--store", str(run["store"].url)],
                             env=run["env"], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no run 'nope'" in missing.stderr


def test_student_loads_in_ase(run: dict[str, Any]) -> None:
    from ase.build import bulk

    from pfd.model_cache import fetch_model
    from pfd.models.registry import load_calculator

    st = run["store"]
    local = fetch_model(st.url, "runs/tiny/distill/student", run["tmp"] / "fetch")
    calc = load_calculator(local)
    si = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 1, 1))
    si.rattle(0.05, seed=3)
    si.calc = calc
    f = si.get_forces()
    assert f.shape == (16, 3) and np.all(np.isfinite(f)) and np.abs(f).max() > 0
    assert np.isfinite(si.get_potential_energy())
    # the teacher's stresses ride along with its labels: the student learns the virial too
    meta = json.loads((local / "pfd_model.json").read_text())
    assert meta["uses_virial"] is True
    rec = st.get_json("runs/tiny/distill/record.json")
    names = {(r["model"], r["data"]) for r in rec["table"]}
    assert names == {("student", "teacher"), ("student", "dft"), ("teacher", "dft")}
    # one refinement round: the round-1 student started from round 0's weights on the
    # teacher's frames plus the 10 worst frames of round 0's own MD; both measured
    rounds = rec["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[0]["student"] == "runs/tiny/distill/round-00/student"
    assert rounds[1]["student"] == "runs/tiny/distill/round-01/student"
    assert rounds[0]["n_added"] == 10 and not rounds[0]["converged"]  # bound 0.001 eV/Å
    assert rec["train_keys"] == ["runs/tiny/distill/synthetic.extxyz",
                                 "runs/tiny/distill/round-01/added.extxyz"]
    added = st.get_frames("runs/tiny/distill/round-01/added.extxyz")
    assert {a.info["distill_kind"] for a in added} == {"student_md"}
    r1 = json.loads(st.get_bytes("runs/tiny/distill/round-01/student/pfd_model.json"))
    # 48 teacher-MD frames + 6 DFT configurations relabelled + 6 perturbed copies, split by
    # frame hash (how many land in the test part follows the MD's last bits: 53/7 on
    # one machine, 52/8 on another); round 1 trains on the training part + the 10 added
    syn = rec["synthetic"]
    assert syn["n_train"] + syn["n_test"] == 48 + 6 + 6 and syn["n_test"] > 0
    assert r1["settings"]["steps"] == 100 and r1["n_train_frames"] == syn["n_train"] + 10
    assert [x["n_train_frames"] for x in rec["trainings"]] == [syn["n_train"],
                                                               syn["n_train"] + 10]
    assert [(x["steps_trained"], x["steps_ceiling"]) for x in rec["trainings"]] == [
        (200, 200), (100, 100)]  # no plateau rule in tiny.yaml: full schedules
    final = json.loads(st.get_bytes("runs/tiny/distill/student/pfd_model.json"))
    assert final == r1  # the published student is the last round's
    # the DFT audit: 2 frames of the final student's own MD, labelled by pw.x
    audit = rec["audit"]
    assert audit["n_frames"] == 2 and audit["failed"] == 0
    assert audit["student"]["model"] == "runs/tiny/distill/student"
    assert all(np.isfinite(audit[m]["force_rmse_eV_A"]) for m in ("student", "teacher"))
    assert not [k for k in st.list("runs/tiny/distill/audit") if k.endswith("labelled.extxyz")]
    dft = st.get_json("runs/tiny/distill/test_teacher_vs_dft.json")
    n_dft = 3 + sum(len(st.get_frames(k)) for k in st.list("runs/tiny/stage-")
                    if k.endswith("labelled.extxyz"))
    assert dft["n_frames"] == n_dft


def test_teacher_speaks_dft_energy_reference(run: dict[str, Any]) -> None:
    """QE energies are ~-108 eV/atom, SevenNet's ~-5.4: the shift must be applied."""
    rec = run["store"].get_json("runs/tiny/distill/test_teacher_vs_dft.json")
    assert rec["energy_rmse_meV_atom"] < 200
    # the report says so: same functional, another code, and the refitted element energy
    theory = run["store"].get_json("runs/tiny/report/level_of_theory.json")
    assert theory["labeller"]["functional"] == "PBE" and len(theory["differences"]) == 1
    assert -110 < theory["energy_shift_eV_per_atom"]["Si"] < -95
    assert "## Level of theory" in run["store"].get_text("runs/tiny/report/summary.md")


def test_finished_run_is_noop(run: dict[str, Any]) -> None:
    # no new DFT (checked above), no retraining, no new models or datasets
    st, before = run["store"], run["before"]
    key = "runs/tiny/distill/student/frozen_model.pth"
    assert hashlib.sha256(st.get_bytes(key)).hexdigest() == before["student_sha"]
    assert (Path(st.url) / key).stat().st_mtime_ns == before["student_mtime"]
    assert {k for k in st.list("runs/tiny/models/")} == {
        k for k in before["keys"] if k.startswith("runs/tiny/models/")}
    assert run["noop_s"] < run["resumed_s"]
    assert "run tiny completed" in run["noop_stdout"]


_READ_ARTIFACTS = """
import json
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
keys = ["pfd-tiny-iterations", "pfd-tiny-report", "pfd-tiny-progress",
        "pfd-tiny-explore-progress", "pfd-tiny-label-progress",
        "pfd-tiny-finetune-progress", "pfd-tiny-student-progress"]
with get_client(sync_client=True) as c:
    arts = c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
arts = sorted(arts, key=lambda a: a.updated, reverse=True)  # newest first
print(json.dumps([{"key": a.key, "type": a.type, "data": a.data} for a in arts], default=str))
"""


_READ_TASK_STATES = """
import json, sys
from datetime import datetime
from prefect.client.orchestration import get_client
since = datetime.fromisoformat(sys.argv[1])
with get_client(sync_client=True) as c:
    runs = c.read_task_runs(limit=200)
print(json.dumps([[r.name, r.state.name if r.state else None] for r in runs
                  if r.expected_start_time and r.expected_start_time >= since]))
"""


def test_finished_rerun_hits_prefect_cache(run: dict[str, Any]) -> None:
    """A new flow run of the same config reuses persisted task results (INPUTS+TASK_SOURCE)."""
    import json

    out = subprocess.run([sys.executable, "-c", _READ_TASK_STATES, run["noop_started"]],
                         env=run["env"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    # subflow runs (pfd-stage, pfd-distill) appear as wrapper task runs: not cacheable
    states = [(n, st) for n, st in json.loads(out.stdout.strip().splitlines()[-1])
              if not n.startswith("pfd-")]
    names = {name.rsplit("-", 1)[0] for name, _ in states}
    assert {"finetune", "explore", "label", "train-student"} <= names, states
    assert [x for x in states if x[1] != "Cached"] == []


def test_prefect_artifacts_published(run: dict[str, Any]) -> None:
    """The same table `pfd status` prints is a Prefect table artifact, plus report/progress."""
    import json

    out = subprocess.run([sys.executable, "-c", _READ_ARTIFACTS], env=run["env"],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    arts = json.loads(out.stdout.strip().splitlines()[-1])
    latest: dict[str, Any] = {}
    for a in arts:  # newest first
        latest.setdefault(a["key"], a)
    assert set(latest) == {"pfd-tiny-iterations", "pfd-tiny-report", "pfd-tiny-progress",
                           "pfd-tiny-explore-progress", "pfd-tiny-label-progress",
                           "pfd-tiny-finetune-progress", "pfd-tiny-student-progress"}
    # per-phase progress of the fan-outs and of both trainings
    for phase in ("explore", "label", "finetune", "student"):
        assert float(latest[f"pfd-tiny-{phase}-progress"]["data"]) == 100.0
    table = json.loads(latest["pfd-tiny-iterations"]["data"])
    assert [(r["stage"], r["iter"]) for r in table] == [("1", "0"), ("2", "0")]
    assert latest["pfd-tiny-report"]["type"] == "markdown"
    report = latest["pfd-tiny-report"]["data"]
    assert "## Distillation" in report
    assert report.count("](data:image/png;base64,") == 3  # parity, iterations, lcurve
    assert "student model: `" in report and "pfd fetch tiny" in report
    assert float(latest["pfd-tiny-progress"]["data"]) == 100.0
