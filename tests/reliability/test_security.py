"""Guarantee 7: S3 credentials never leave the environment; keys built from user strings
stay inside the run's prefix; run ids are validated wherever a user types one."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SECRET, Fault, ReferenceRun, cli_env, pfd, record

from pfd.config import PFDConfig
from pfd.run_store import RunContext
from pfd.store import LocalStore, StoreError


@pytest.mark.slow
def test_credentials_never_appear_in_logs_artifacts_or_records(
        reference_run: ReferenceRun) -> None:
    """The reference run used S3 with a known secret key: look for it everywhere."""
    run = reference_run
    assert SECRET in run.env["AWS_SECRET_ACCESS_KEY"]  # the run really had it
    assert SECRET not in run.out.stdout + run.out.stderr  # logs, report
    client = run.store.client
    objects = client.list_objects_v2(Bucket="rel-ref")["Contents"]
    assert len(objects) > 30
    for obj in objects:  # every artifact, its metadata, the stored config copy
        got = client.get_object(Bucket="rel-ref", Key=obj["Key"])
        assert SECRET.encode() not in got["Body"].read(), obj["Key"]
        assert SECRET not in str(got["Metadata"]), obj["Key"]
    files = [p for p in run.tmp.rglob("*") if p.is_file()]  # Prefect's DB + results, scratch
    assert any(p.name.endswith(".db") for p in files)
    leaks = [p for p in files if SECRET.encode() in p.read_bytes()]
    assert leaks == []
    cfg = run.store.get_json("runs/mini/config.json")
    assert "secret" not in str(cfg).lower() and "aws_" not in str(cfg).lower()
    record(Fault("test_credentials_never_appear_in_logs_artifacts_or_records",
                 f"S3 secret in the environment of a whole run ({len(objects)} objects, "
                 f"{len(files)} local files searched)", outcome="secret found nowhere"))


@pytest.mark.slow
def test_a_run_writes_only_under_its_prefix_and_the_label_cache(
        reference_run: ReferenceRun) -> None:
    keys = reference_run.store.list("")
    assert keys and all(k.startswith(("runs/mini/", "labels/")) for k in keys), keys


@pytest.mark.parametrize("part", ["..", "../other-run", "/etc/passwd", "a/../../b", "a\\..\\b",
                                  "", "x/"])
def test_keys_from_user_strings_cannot_escape(part: str, tmp_path: Path) -> None:
    cfg = PFDConfig.model_validate({
        "run_id": "r", "structures": {"d": {"build": {"element": "Si", "crystal": "diamond",
                                                      "a_A": 5.43}}},
        "init": {"structures": ["d"]},
        "stages": [{"name": "s", "groups": [{"structures": ["d"], "temperatures_K": [300]}]}]})
    ctx = RunContext(cfg=cfg, store_url=str(tmp_path / "store"), workdir=tmp_path)
    with pytest.raises(StoreError, match="invalid store key"):
        ctx.store.put_text(ctx.key("stage-01", part), "x")
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("*"))
    assert not list(tmp_path.parent.glob("other-run*"))


@pytest.mark.parametrize("run_id", ["../..", "/etc", "a/b", "..", ".hidden", "x" * 65])
def test_status_validates_the_run_id(run_id: str, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_json("runs/ok/config.json", {})
    out = pfd(["status", run_id, "--store", store.url], tmp_path, cli_env(tmp_path),
              timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "run id" in out.stderr and "Traceback" not in out.stderr
    record(Fault(f"test_status_validates_the_run_id[{run_id[:12]}]",
                 f"run id {run_id[:12]!r} on the command line", outcome="exit 2, named"))
