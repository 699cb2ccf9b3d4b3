"""Training survives kill -9 and reports progress while it runs.

The fast tests drive :func:`pfd.models.deepmd_run.run_dp` with a stand-in ``dp`` (a
python script that writes a learning curve line by line) so the polling and the
checkpoint rules are checked without deepmd; the slow test kills a real ``dp --pt
train`` after its first checkpoint and checks that the rerun continues from it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase.io import read

from pfd.config import StudentSpec
from pfd.models.deepmd import train_student
from pfd.models.deepmd_run import (
    _truncate_lcurve,
    latest_checkpoint,
    read_lcurve,
    run_dp,
    run_training,
)

SI_DATA = Path(__file__).resolve().parent / "data/si_paper/train.extxyz"  # see data/README.md

FAKE_DP = textwrap.dedent("""
    import sys, time
    rows = int(sys.argv[-1]) if sys.argv[-1].isdigit() else 4
    with open("lcurve.out", "w", buffering=1) as fh:
        fh.write("# step rmse_val rmse_trn rmse_e_val rmse_e_trn rmse_f_val rmse_f_trn lr\\n")
        for k in range(1, rows + 1):
            fh.write(f"{10 * k} {1.0 / k} {2.0 / k} 0.1 0.2 {0.5 / k} 0.6 1e-3\\n")
            time.sleep(0.3)
    print("fake dp done", sys.argv[1:])
""")


def _fake_dp(tmp_path: Path) -> list[str]:
    script = tmp_path / "fake_dp.py"
    script.write_text(FAKE_DP)
    return [sys.executable, str(script)]


def test_progress_is_reported_while_dp_runs(tmp_path: Path) -> None:
    seen: list[tuple[float, dict[str, Any]]] = []
    t0 = time.monotonic()
    run_dp(_fake_dp(tmp_path), ["train", "input.json", "5"], tmp_path, "train.log", 1,
           progress=lambda r: seen.append((time.monotonic() - t0, r)), poll_s=0.2)
    steps = [r["step"] for _, r in seen]
    assert steps == [10, 20, 30, 40, 50]  # each row once, in order
    assert seen[0][0] < seen[-1][0] - 0.5  # reported during the run, not only at its end
    assert seen[1][1]["loss"] == pytest.approx(1.0)  # rmse_trn
    assert seen[1][1]["rmse_f_val"] == pytest.approx(0.25)
    assert seen[1][1]["rmse_e_val"] == pytest.approx(0.1)
    assert "fake dp done" in (tmp_path / "train.log").read_text()


def test_broken_progress_callback_does_not_stop_training(tmp_path: Path) -> None:
    def boom(row: dict[str, Any]) -> None:
        raise ConnectionError("dashboard down")

    with pytest.warns(UserWarning, match="dashboard down"):
        run_dp(_fake_dp(tmp_path), ["train", "x", "3"], tmp_path, "train.log", 1,
               progress=boom, poll_s=0.2)
    assert len(read_lcurve(tmp_path / "lcurve.out")) == 3


def test_dp_failure_names_the_command_and_log(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"`dp --pt nope` failed with exit code 3"):
        run_dp([sys.executable, "-c", "import sys; print('bad flag'); sys.exit(3)"],
               ["nope"], tmp_path, "x.log", 1)


def test_checkpoint_pointer_rules(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path, "pt") is None
    (tmp_path / "model.ckpt-200.pt").write_bytes(b"x")
    (tmp_path / "checkpoint").write_text("model.ckpt-100.pt")
    assert latest_checkpoint(tmp_path, "pt") is None  # pointer to a missing file
    (tmp_path / "model.ckpt-100.pt").write_bytes(b"x")
    # the pointer wins over a newer file: model.ckpt-200.pt may be half written
    assert latest_checkpoint(tmp_path, "pt") == ("model.ckpt-100.pt", 100)
    (tmp_path / "checkpoint").write_text(
        'model_checkpoint_path: "model.ckpt-300"\nall_model_checkpoint_paths: "model.ckpt-300"')
    assert latest_checkpoint(tmp_path, "tf") is None
    (tmp_path / "model.ckpt-300.index").write_bytes(b"x")
    assert latest_checkpoint(tmp_path, "tf") == ("model.ckpt-300", 300)


def test_lcurve_is_cut_back_to_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "lcurve.out"
    path.write_text("# step rmse_trn lr\n1 2.0 1e-3\n100 1.0 1e-3\n150 0.9 1e-3\n20")
    _truncate_lcurve(path, 100)
    assert [r["step"] for r in read_lcurve(path)] == [1, 100]
    assert path.read_text().startswith("# step")


def test_other_training_in_the_workdir_is_not_resumed(tmp_path: Path) -> None:
    # a checkpoint of a *different* input must be wiped, not restarted from
    dp = _fake_dp(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.npy").write_bytes(b"1")
    cfg = {"training": {"numb_steps": 100}}
    run_training(tmp_path, cfg, [tmp_path / "data"], dp=dp, backend="pt", threads=1)
    (tmp_path / "model.ckpt-40.pt").write_bytes(b"x")
    (tmp_path / "checkpoint").write_text("model.ckpt-40.pt")
    (tmp_path / "data" / "x.npy").write_bytes(b"2")  # the data changed
    run = run_training(tmp_path, cfg, [tmp_path / "data"], dp=dp, backend="pt", threads=1)
    assert run.resumed_from_step is None
    assert not (tmp_path / "model.ckpt-40.pt").exists()
    # same data and input again: resumed from the pointer, with --restart
    (tmp_path / "model.ckpt-40.pt").write_bytes(b"x")
    (tmp_path / "checkpoint").write_text("model.ckpt-40.pt")
    run = run_training(tmp_path, cfg, [tmp_path / "data"], dp=dp, backend="pt", threads=1)
    assert run.resumed_from_step == 40
    assert run.command[-2:] == ["--restart", "model.ckpt-40.pt"]


DRIVER = textwrap.dedent("""
    import sys
    import numpy as np
    from ase.io import read
    from pfd.config import StudentSpec
    from pfd.models.deepmd import train_student
    sys.path.insert(0, {tests!r})
    from test_deepmd_resume import frames, SETTINGS
    train, valid = frames()
    train_student(train, valid, {workdir!r}, StudentSpec(**SETTINGS))
""")

SETTINGS = dict(descriptor_neuron=[8, 16], axis_neuron=4, fitting_neuron=[16, 16], steps=400,
                start_lr=2e-3, stop_lr=1e-4, disp_freq=20, save_freq=100, batch_size=1,
                compress=False)


def frames() -> tuple[list, list]:
    pool = [a for a in read(SI_DATA, index=":") if 8 <= len(a) <= 64]
    idx = np.random.default_rng(3).permutation(len(pool))
    return [pool[i] for i in idx[:30]], [pool[i] for i in idx[30:34]]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_training_killed_after_a_checkpoint_resumes(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    script = DRIVER.format(tests=str(Path(__file__).parent), workdir=str(workdir))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while latest_checkpoint(workdir, "pt") is None:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its dp child, like a lost node
        proc.wait()
    killed_at = latest_checkpoint(workdir, "pt")
    assert killed_at is not None
    step_at_kill = killed_at[1]
    shown_before = read_lcurve(workdir / "lcurve.out")
    assert shown_before[-1]["step"] < 400, "training finished before it could be killed"

    rows: list[dict[str, Any]] = []
    train, valid = frames()
    model_dir = train_student(train, valid, workdir, StudentSpec(**SETTINGS),
                              progress=rows.append)
    meta = json.loads((model_dir / "pfd_model.json").read_text())
    assert meta["resumed_from_step"] == step_at_kill >= 100

    # the rerun trained only the remaining steps: deepmd logged no batch before the
    # checkpoint (deepmd 3.2 repeats the checkpoint's own step: it stores N-1 in
    # model.ckpt-N.pt), and progress started there
    log = (workdir / "train.log").read_text()
    batches = [int(b) for b in re.findall(r"Batch\s+(\d+):", log)]
    assert batches and min(batches) == step_at_kill and max(batches) == 400
    assert rows and rows[0]["step"] == step_at_kill and rows[-1]["step"] == 400
    assert len(rows) == (400 - step_at_kill) // 20 + 1

    # one learning curve over the whole run, continuous across the kill
    steps = [r["step"] for r in read_lcurve(model_dir / "lcurve.out")]
    assert steps == sorted(set(steps)) and steps[0] == 1 and steps[-1] == 400
    assert {r["step"] for r in shown_before if r["step"] < step_at_kill} <= set(steps)

    # a rerun after completion trains nothing
    again = train_student(train, valid, workdir, StudentSpec(**SETTINGS))
    meta2 = json.loads((again / "pfd_model.json").read_text())
    assert meta2["resumed_from_step"] == 400 and meta2["train_seconds"] == 0


def test_dp_dies_with_a_killed_worker(tmp_path: Path) -> None:
    # a retry must never share the work dir with an orphaned dp still training
    (tmp_path / "sleeper.py").write_text(
        "import os, time\nopen('pid', 'w').write(str(os.getpid()))\ntime.sleep(120)\n")
    driver = (f"import sys; from pfd.models.deepmd_run import run_dp; "
              f"run_dp([sys.executable, {str(tmp_path / 'sleeper.py')!r}], [], "
              f"{str(tmp_path)!r}, 'x.log', 1)")
    proc = subprocess.Popen([sys.executable, "-c", driver])
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "pid").exists() or not (tmp_path / "pid").read_text():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        child = int((tmp_path / "pid").read_text())
    finally:
        proc.kill()  # SIGKILL to the driver only, not its process group
        proc.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = _alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "dp outlived the process that started it"


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
