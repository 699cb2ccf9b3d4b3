"""The workflow's data path on S3: DFT labels, datasets and records go through the same
steps as on a local directory, and a rerun against the bucket pays for nothing twice."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
import yaml
from requires import needs

from pfd import run_store, steps
from pfd.config import parse_config
from pfd.store import S3Store, open_store

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow,
              needs(shutil.which("pw.x") is not None, "pw.x not installed")]


def test_init_dataset_on_s3(moto_endpoint: str, aws_env: None, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PFD_S3_ENDPOINT_URL", moto_endpoint)
    raw = yaml.safe_load((ROOT / "tests/data/tiny.yaml").read_text())
    raw["init"]["perturb"]["n_per_structure"] = 1  # 2 DFT frames
    raw["run_id"] = "s3-run"
    cfg = parse_config(raw)
    url = f"s3://pfd-{uuid.uuid4().hex[:10]}/team/project"
    ctx = run_store.make_context(cfg, store_url=url, workdir=tmp_path / "work")
    assert ctx.store_url == url and isinstance(ctx.store, S3Store)

    first = steps.init_dataset(ctx)
    assert (first["labelled"], first["dft_computed"], first["dft_cached"]) == (2, 2, 0)
    store = open_store(url)
    frames = store.get_frames("runs/s3-run/init/labelled.extxyz")
    assert len(frames) == 2 and all(a.calc.results.get("stress") is not None for a in frames)
    labels = [k for k in store.list("labels/") if k.endswith(".extxyz")]
    assert len(labels) == 2

    # a second run of the same config (new run id) finds every label in the bucket
    raw["run_id"] = "s3-run-2"
    ctx2 = run_store.make_context(parse_config(raw), store_url=url, workdir=tmp_path / "work2")
    second = steps.init_dataset(ctx2)
    assert (second["dft_computed"], second["dft_cached"]) == (0, 2)
    # and a rerun of the first run is a pure read of its record
    assert steps.init_dataset(ctx)["resumed"] is True
