"""The store contract, run once per backend: a local directory, S3 as moto's HTTP server
speaks it, and S3 as a real disk-backed object store speaks it (OpenStack Swift + s3api).

Running the same assertions against every backend is what guarantees a workflow
developed locally behaves identically when pointed at object storage.
"""

from __future__ import annotations

import pickle
import uuid
from pathlib import Path

import boto3
import numpy as np
import pytest
from ase import Atoms
from botocore.config import Config
from s3server import SECRET

from pfd.frames import attach_labels
from pfd.store import (
    ArtifactStore,
    IntegrityError,
    LocalStore,
    NotFoundInStore,
    S3Store,
    StoreError,
    open_store,
)

MiB = 1024 * 1024


@pytest.fixture
def raw_s3(moto_endpoint: str, aws_env: None) -> object:
    """A client that goes around the store, to tamper with objects behind its back."""
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


def _bucket() -> str:
    return f"pfd-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["local", "moto", "swift"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    if request.param == "moto":
        endpoint = request.getfixturevalue("moto_endpoint")
        request.getfixturevalue("aws_env")
    else:
        endpoint = request.getfixturevalue("swift_env").endpoint
    return S3Store(bucket=_bucket(), prefix="runs-test", endpoint_url=endpoint)


def _raw_client(store: S3Store) -> object:
    """A client that goes around the store, with the same endpoint and credentials.

    A fresh session: boto3's default session caches the first credentials it saw.
    """
    return boto3.session.Session().client(
        "s3", endpoint_url=store.endpoint_url, region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}))


def _corrupt(store: ArtifactStore, key: str, data: bytes, raw_s3: object, meta: dict) -> None:
    """Replace stored bytes without updating the recorded checksum."""
    if isinstance(store, LocalStore):
        Path(store.uri(key)).write_bytes(data)
    else:
        assert isinstance(store, S3Store)
        raw_s3.put_object(  # type: ignore[attr-defined]
            Bucket=store.bucket, Key=f"{store.prefix}/{key}", Body=data, Metadata=meta
        )


def _frames() -> list[Atoms]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(3):
        atoms = Atoms("Si2", positions=rng.random((2, 3)) * 3, cell=np.eye(3) * 5.43, pbc=True)
        out.append(
            attach_labels(
                atoms,
                energy=-10.5 - i,
                forces=rng.normal(size=(2, 3)),
                stress=rng.normal(size=6) * 0.01,
            )
        )
    return out


# -- shared contract -------------------------------------------------------------------


def test_bytes_round_trip(store: ArtifactStore) -> None:
    payload = bytes(range(256)) * 10
    uri = store.put_bytes("data/blob.bin", payload)
    assert uri == store.uri("data/blob.bin")
    assert uri.startswith(store.url)
    assert store.get_bytes("data/blob.bin") == payload
    store.put_bytes("data/blob.bin", b"v2")
    assert store.get_bytes("data/blob.bin") == b"v2"
    store.put_bytes("data/empty", b"")
    assert store.get_bytes("data/empty") == b""


def test_json_and_text(store: ArtifactStore) -> None:
    record = {"iteration": 3, "rmse": {"energy": 1.5e-3}, "tags": ["a", "é"], "ok": True}
    store.put_json("records/iter-003.json", record)
    assert store.get_json("records/iter-003.json") == record
    store.put_text("notes.txt", "héllo\n")
    assert store.get_text("notes.txt") == "héllo\n"
    store.put_text("bad.json", "{not json")
    with pytest.raises(StoreError, match="bad.json"):
        store.get_json("bad.json")


def test_frames_round_trip_keeps_labels(store: ArtifactStore) -> None:
    frames = _frames()
    store.put_frames("datasets/train.extxyz", frames)
    back = store.get_frames("datasets/train.extxyz")
    assert len(back) == len(frames)
    for a, b in zip(frames, back, strict=True):
        assert b.get_chemical_symbols() == a.get_chemical_symbols()
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-6)
        np.testing.assert_allclose(b.get_potential_energy(), a.get_potential_energy())
        np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-8)
        np.testing.assert_allclose(b.get_stress(), a.get_stress(), atol=1e-10)
    store.put_frames("datasets/empty.extxyz", [])
    assert store.get_frames("datasets/empty.extxyz") == []


def test_list_exists_delete(store: ArtifactStore) -> None:
    for key in ["b/2.txt", "a/1.txt", "a/sub/3.txt", "ab.txt", "top"]:
        store.put_text(key, key)
    assert store.list() == ["a/1.txt", "a/sub/3.txt", "ab.txt", "b/2.txt", "top"]
    assert store.list("a/") == ["a/1.txt", "a/sub/3.txt"]
    assert store.list("a") == ["a/1.txt", "a/sub/3.txt", "ab.txt"]
    assert store.list("a/sub") == ["a/sub/3.txt"]
    assert store.list("missing/") == []
    assert store.exists("a/1.txt")
    assert not store.exists("a")  # a "directory" is not a key
    assert not store.exists("nope.txt")
    store.delete("a/1.txt")
    assert not store.exists("a/1.txt")
    assert "a/1.txt" not in store.list()
    store.delete("a/1.txt")  # deleting again is a no-op, so cleanup can be retried
    with pytest.raises(NotFoundInStore, match="a/1.txt") as info:
        store.get_bytes("a/1.txt")
    assert isinstance(info.value, KeyError)
    assert str(info.value).startswith("not in store")  # no KeyError-style quoting


def test_put_dir_get_dir(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "model"
    (src / "ckpt" / "deep").mkdir(parents=True)
    (src / "input.json").write_text('{"a": 1}')
    (src / "ckpt" / "model.pt").write_bytes(b"\x00weights\xff" * 100)
    (src / "ckpt" / "deep" / "x.bin").write_bytes(b"x")
    keys = store.put_dir("models/m1", src)
    assert keys == ["models/m1/ckpt/deep/x.bin", "models/m1/ckpt/model.pt", "models/m1/input.json"]
    store.put_text("models/m10/other.txt", "must not be fetched with m1")

    dst = store.get_dir("models/m1", tmp_path / "out")
    got = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file())
    assert got == ["ckpt/deep/x.bin", "ckpt/model.pt", "input.json"]
    for rel in got:
        assert (dst / rel).read_bytes() == (src / rel).read_bytes()
    with pytest.raises(NotFoundInStore, match="models/none"):
        store.get_dir("models/none", tmp_path / "out2")


@pytest.mark.parametrize(
    "key",
    ["/abs/key", "a/../b", "..", "a//b", "a\\b", "dir/", "", "./a", "x.sha256", "a/./b"],
)
def test_bad_keys_rejected(store: ArtifactStore, key: str) -> None:
    for op in (lambda: store.put_bytes(key, b"x"), lambda: store.get_bytes(key)):
        with pytest.raises(StoreError) as info:
            op()
        assert repr(key) in str(info.value)
        assert "relative '/'-separated" in str(info.value)
    assert store.list() == []  # nothing was written anywhere


def test_bad_list_prefix_rejected(store: ArtifactStore) -> None:
    with pytest.raises(StoreError, match="invalid store prefix"):
        store.list("../")


def test_integrity_wrong_bytes(store: ArtifactStore) -> None:
    raw = _raw_client(store) if isinstance(store, S3Store) else None
    store.put_bytes("d/x.bin", b"original")
    good = store.get_bytes("d/x.bin")
    assert good == b"original"
    wrong_meta = {"sha256": "0" * 64}
    _corrupt(store, "d/x.bin", b"tampered", raw, wrong_meta)
    with pytest.raises(IntegrityError, match="d/x.bin") as info:
        store.get_bytes("d/x.bin")
    assert "mismatch" in str(info.value)
    with pytest.raises(IntegrityError):
        store.get_frames("d/x.bin")  # conveniences go through the same check


def test_integrity_missing_checksum(store: ArtifactStore) -> None:
    if isinstance(store, LocalStore):
        store.put_bytes("d/y.bin", b"data")
        Path(store.uri("d/y.bin") + ".sha256").unlink()
    else:
        assert isinstance(store, S3Store)
        raw = _raw_client(store)
        store.put_bytes("d/other", b"creates the bucket")
        _corrupt(store, "d/y.bin", b"data", raw, {})
    with pytest.raises(IntegrityError, match="no recorded sha256"):
        store.get_bytes("d/y.bin")


def test_unicode_and_file_helpers(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(b"payload")
    store.put_file("files/ünï code.bin", src)
    out = store.get_file("files/ünï code.bin", tmp_path / "nested" / "out.bin")
    assert out.read_bytes() == b"payload"
    assert not list((tmp_path / "nested").glob("*.pfd-tmp"))
    with pytest.raises(StoreError, match="missing.bin"):
        store.put_file("files/x", tmp_path / "missing.bin")


# -- local backend ---------------------------------------------------------------------


def test_local_layout(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    store.put_bytes("a/b.bin", b"hello")
    names = sorted(p.name for p in (tmp_path / "s" / "a").iterdir())
    assert names == ["b.bin", "b.bin.sha256"]  # no temp files left behind
    sidecar = (tmp_path / "s" / "a" / "b.bin.sha256").read_text()
    assert sidecar.split()[0] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert store.list() == ["a/b.bin"]
    assert store.url == str((tmp_path / "s").resolve())
    store.delete("a/b.bin")
    assert sorted(p.name for p in (tmp_path / "s" / "a").iterdir()) == []


def test_local_read_of_missing_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "never-created")
    assert store.list() == []
    assert not store.exists("x")
    with pytest.raises(NotFoundInStore):
        store.get_bytes("x")


# -- S3 backend ------------------------------------------------------------------------


def test_s3_multipart_round_trip(moto_endpoint: str, aws_env: None, raw_s3: object) -> None:
    store = S3Store(
        bucket=_bucket(),
        prefix="runs-test",
        endpoint_url=moto_endpoint,
        multipart_threshold=5 * MiB,
        multipart_chunksize=5 * MiB,
    )
    payload = np.random.default_rng(1).bytes(6 * MiB + 123)
    store.put_bytes("big/model.pt", payload)
    head = raw_s3.head_object(Bucket=store.bucket, Key="runs-test/big/model.pt")  # type: ignore[attr-defined]
    assert head["ETag"].strip('"').endswith("-2")  # two parts: 5 MiB + remainder
    assert store.get_bytes("big/model.pt") == payload


def test_s3_prefix_isolation_and_empty_prefix(
    moto_endpoint: str, aws_env: None, raw_s3: object
) -> None:
    bucket = _bucket()
    rooted = S3Store(bucket=bucket, prefix="", endpoint_url=moto_endpoint)
    scoped = S3Store(bucket=bucket, prefix="runs-test", endpoint_url=moto_endpoint)
    sibling = S3Store(bucket=bucket, prefix="runs-test2", endpoint_url=moto_endpoint)
    rooted.put_text("top.txt", "root")
    scoped.put_text("x.txt", "scoped")
    sibling.put_text("y.txt", "sibling")
    assert rooted.url == f"s3://{bucket}"
    assert rooted.uri("top.txt") == f"s3://{bucket}/top.txt"
    assert scoped.list() == ["x.txt"]
    assert rooted.list() == ["runs-test/x.txt", "runs-test2/y.txt", "top.txt"]
    assert rooted.get_text("runs-test/x.txt") == "scoped"
    listed = raw_s3.list_objects_v2(Bucket=bucket)["Contents"]  # type: ignore[attr-defined]
    assert sorted(o["Key"] for o in listed) == ["runs-test/x.txt", "runs-test2/y.txt", "top.txt"]


def test_s3_missing_bucket_and_existing_bucket(
    moto_endpoint: str, aws_env: None, raw_s3: object
) -> None:
    missing = S3Store(bucket=_bucket(), endpoint_url=moto_endpoint)
    assert missing.list() == []
    assert not missing.exists("k")
    with pytest.raises(NotFoundInStore):
        missing.get_bytes("k")
    bucket = _bucket()
    raw_s3.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    store = S3Store(bucket=bucket, endpoint_url=moto_endpoint)
    store.put_bytes("k", b"v")  # an existing bucket is reused, not an error
    assert store.get_bytes("k") == b"v"


def test_s3_repr_hides_credentials(moto_endpoint: str, aws_env: None) -> None:
    store = S3Store(bucket=_bucket(), prefix="p", endpoint_url=moto_endpoint)
    store.put_bytes("k", b"v")  # client (and so credentials) now loaded
    assert SECRET not in repr(store)
    assert SECRET not in str(store)
    assert "s3://" in repr(store)
    assert SECRET.encode() not in pickle.dumps(store)
    clone = pickle.loads(pickle.dumps(store))  # shipped to a worker, it rebuilds its client
    assert clone.get_bytes("k") == b"v"


def test_s3_invalid_construction() -> None:
    with pytest.raises(StoreError, match="bucket"):
        S3Store(bucket="")
    with pytest.raises(StoreError, match="a/../b"):
        S3Store(bucket="b", prefix="a/../b")


# -- open_store ------------------------------------------------------------------------


def test_open_store_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PFD_STORE", raising=False)
    default = open_store()
    assert isinstance(default, LocalStore)
    assert default.url == str(tmp_path.resolve() / "pfd-store")

    rel = open_store("rel/store")
    assert isinstance(rel, LocalStore) and rel.url == str(tmp_path.resolve() / "rel" / "store")

    monkeypatch.setenv("PFD_STORE", str(tmp_path / "from-env"))
    assert open_store().url == str(tmp_path.resolve() / "from-env")

    via_url = open_store(f"file://{tmp_path}/f")
    assert isinstance(via_url, LocalStore) and via_url.url == str(tmp_path.resolve() / "f")
    via_url.put_text("k", "v")
    assert open_store(str(tmp_path / "f")).get_text("k") == "v"


def test_open_store_s3(moto_endpoint: str, aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PFD_S3_ENDPOINT_URL", moto_endpoint)
    bucket = _bucket()
    store = open_store(f"s3://{bucket}/runs/exp1")
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.endpoint_url) == (bucket, "runs/exp1", moto_endpoint)
    assert store.url == f"s3://{bucket}/runs/exp1"
    store.put_text("k", "v")  # proves the endpoint from the environment is used
    assert open_store(f"s3://{bucket}").get_text("runs/exp1/k") == "v"


@pytest.mark.parametrize("url", ["gs://bucket/x", "s3://", "file://host/x"])
def test_open_store_rejects(url: str) -> None:
    with pytest.raises(StoreError, match="store URL"):
        open_store(url)
