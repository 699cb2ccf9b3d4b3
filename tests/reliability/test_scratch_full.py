"""Guarantee 5: a full disk gives a clear error and leaves the store intact.

The scratch (work) directory, and separately a local store, live on a 2 MiB tmpfs that
is filled up before the run: the real "No space left on device" from the kernel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Fault, cli_env, mini_config, pfd, record
from requires import missing, needs

from pfd.store import LocalStore, StoreError

pytestmark = [pytest.mark.slow,
              needs(shutil.which("pw.x") is not None, "pw.x not installed")]


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs filled to the last byte."""
    if os.geteuid() != 0:
        missing("mounting a small tmpfs needs root (run as root, or in a container)")
    mnt = tmp_path / "full"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        missing(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path) -> None:
    with (mnt / "filler").open("wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass


def _verify_all(store: LocalStore) -> dict[str, bytes]:
    return {k: store.get_bytes(k) for k in store.list("")}  # raises on any bad checksum


def test_full_scratch_stops_the_run_and_spares_the_store(full_disk: Path,
                                                         tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_json("runs/earlier/record.json", {"kept": True})
    before = _verify_all(store)
    _fill(full_disk)
    cfg = mini_config(tmp_path, "pw.x")
    out = pfd(["run", str(cfg), "--store", store.url, "--workdir", str(full_disk / "work")],
              tmp_path, cli_env(tmp_path), timeout=400)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    stops = [ln for ln in out.stderr.splitlines() if ln.startswith("pfd run stopped:")]
    assert len(stops) == 1, out.stderr[-3000:]
    assert "scratch disk full (No space left on device)" in stops[0]
    assert "free space in the work directory" in stops[0]
    after = _verify_all(store)
    assert {k: after[k] for k in before} == before  # what was there is untouched
    assert not [k for k in after if k.startswith("labels/") and k.endswith(".extxyz")]
    assert not list(Path(store.url).rglob("*.pfd-tmp"))
    record(Fault("test_full_scratch_stops_the_run_and_spares_the_store",
                 "scratch directory on a full 2 MiB tmpfs", injected=4,
                 outcome="run stopped: 'scratch disk full'; store verified"))


def test_full_store_disk_never_leaves_a_partial_artifact(full_disk: Path) -> None:
    store = LocalStore(full_disk / "store")
    store.put_bytes("runs/r/model.bin", b"old model" * 100)
    before = _verify_all(store)
    _fill(full_disk)
    with pytest.raises(StoreError, match="No space left on device") as err:
        store.put_bytes("runs/r/model.bin", os.urandom(1 << 20))  # overwrite
    assert "model.bin" in str(err.value)
    with pytest.raises(StoreError, match="No space left on device"):
        store.put_bytes("runs/r/new.bin", os.urandom(1 << 20))
    assert _verify_all(store) == before  # the old version, verified; no new key
    assert not list(Path(store.url).rglob("*.pfd-tmp"))
    record(Fault("test_full_store_disk_never_leaves_a_partial_artifact",
                 "local store on a full tmpfs (overwrite + new key)", injected=2,
                 outcome="StoreError; old artifact intact, nothing partial"))
