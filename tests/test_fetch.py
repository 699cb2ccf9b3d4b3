"""`pfd fetch`: a run's results out of a local or S3 store into a plain directory."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import read
from typer.testing import CliRunner

from pfd.cli import app
from pfd.frames import attach_labels
from pfd.store import ArtifactStore, LocalStore, S3Store

RUN = "runs/r1"


def _frames(n: int, seed: int) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    return [attach_labels(Atoms("Si2", positions=rng.random((2, 3)) * 3,
                                cell=np.eye(3) * 5.43, pbc=True),
                          energy=float(-10 - i), forces=rng.normal(size=(2, 3)),
                          stress=rng.normal(size=6) * 0.01) for i in range(n)]


def _fill(store: ArtifactStore) -> None:
    """The layout a finished run leaves behind (see README's store table)."""
    store.put_json(f"{RUN}/config.json", {"run_id": "r1"})
    store.put_json(f"{RUN}/run.json", {"status": "completed"})
    store.put_frames(f"{RUN}/init/labelled.extxyz", _frames(3, 0))
    store.put_frames(f"{RUN}/stage-01/iter-00/labelled.extxyz", _frames(2, 1))
    store.put_frames(f"{RUN}/distill/synthetic.extxyz", _frames(5, 2))
    store.put_json(f"{RUN}/teacher.json", {"model": f"{RUN}/models/finetuned-abc"})
    store.put_bytes(f"{RUN}/models/finetuned-abc/checkpoint_best.pth", b"teacher-weights")
    store.put_json(f"{RUN}/models/finetuned-abc/pfd_model.json", {"backend": "sevennet"})
    store.put_bytes(f"{RUN}/models/finetuned-other/checkpoint_best.pth", b"not the teacher")
    store.put_bytes(f"{RUN}/distill/student/frozen_model.pth", b"student-weights")
    store.put_json(f"{RUN}/distill/student/pfd_model.json", {"backend": "deepmd"})
    store.put_text(f"{RUN}/report/summary.md", "# report\n")


def _check_all(dest: Path) -> None:
    assert (dest / "student/frozen_model.pth").read_bytes() == b"student-weights"
    assert (dest / "teacher/checkpoint_best.pth").read_bytes() == b"teacher-weights"
    assert not (dest / "teacher/finetuned-other").exists()
    dft = read(dest / "datasets/dft_all.extxyz", ":")
    assert len(dft) == 5  # init + D_1, not the teacher-labelled synthetic set
    assert len(read(dest / "datasets/distill/synthetic.extxyz", ":")) == 5
    assert (dest / "report/summary.md").read_text() == "# report\n"
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["parts"] == {"student": 2, "teacher": 2, "datasets": 3, "report": 1}
    files = {f["file"]: f for f in manifest["files"]}
    assert files["student/frozen_model.pth"]["source"].endswith(
        "runs/r1/distill/student/frozen_model.pth")
    for entry in manifest["files"]:
        assert (dest / entry["file"]).is_file()


def test_fetch_everything_from_local_store(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    _fill(store)
    out = CliRunner().invoke(app, ["fetch", "r1", "--to", str(tmp_path / "out"),
                                   "--store", store.url])
    assert out.exit_code == 0, out.output
    assert "student: 2 file(s)" in out.output
    _check_all(tmp_path / "out")


def test_fetch_from_s3(tmp_path: Path, moto_endpoint: str, aws_env: None,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PFD_S3_ENDPOINT_URL", moto_endpoint)
    bucket = f"fetch-{uuid.uuid4().hex[:8]}"
    _fill(S3Store(bucket=bucket, prefix="proj", endpoint_url=moto_endpoint))
    out = CliRunner().invoke(app, ["fetch", "r1", "--to", str(tmp_path / "out"),
                                   "--store", f"s3://{bucket}/proj"])
    assert out.exit_code == 0, out.output
    _check_all(tmp_path / "out")


def test_fetch_one_part_and_errors(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    _fill(store)
    runner = CliRunner()
    out = runner.invoke(app, ["fetch", "r1", "--to", str(tmp_path / "s"), "--what", "student",
                              "--store", store.url])
    assert out.exit_code == 0, out.output
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["manifest.json", "student"]

    bad = runner.invoke(app, ["fetch", "r1", "--to", str(tmp_path / "b"), "--what", "weights",
                              "--store", store.url])
    assert bad.exit_code == 2
    assert "--what 'weights'" in bad.output and "student, teacher, datasets, report" in bad.output

    missing = runner.invoke(app, ["fetch", "r9", "--to", str(tmp_path / "m"),
                                  "--store", store.url])
    assert missing.exit_code == 2 and "no run 'r9'" in missing.output and "r1" in missing.output

    escape = runner.invoke(app, ["fetch", "../r1", "--to", str(tmp_path / "e"),
                                 "--store", store.url])
    assert escape.exit_code == 2 and "run id '../r1'" in escape.output
    assert not (tmp_path / "e").exists() and not (tmp_path / "m").exists()


def test_fetch_unfinished_run_says_what_is_missing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_json(f"{RUN}/config.json", {"run_id": "r1"})
    store.put_frames(f"{RUN}/init/labelled.extxyz", _frames(3, 0))
    out = CliRunner().invoke(app, ["fetch", "r1", "--to", str(tmp_path / "o"),
                                   "--store", store.url])
    assert out.exit_code == 0, out.output
    assert "student: 0 file(s) — not in the run (yet)" in out.output
    assert len(read(tmp_path / "o/datasets/dft_all.extxyz", ":")) == 3
    only = CliRunner().invoke(app, ["fetch", "r1", "--to", str(tmp_path / "p"), "--what",
                                    "student", "--store", store.url])
    assert only.exit_code == 2 and "has no student yet" in only.output
