"""The real object store (Swift + s3api) goes down and comes back under the store.

A days-long run must not die because its object store restarted, and an upload cut in
half must never be readable as a finished artifact.  The proxy is stopped at a chosen
moment (after the first multipart part of an upload went through), so the fault lands
in the middle of a transfer every time rather than by luck.
"""

from __future__ import annotations

import threading
import uuid

import numpy as np
import pytest
from s3server import SwiftServer

from pfd.store import S3Store, StoreError

pytestmark = pytest.mark.slow

MiB = 1024 * 1024


def _store(server: SwiftServer, outage_s: float) -> S3Store:
    return S3Store(bucket=f"outage-{uuid.uuid4().hex[:10]}", prefix="runs",
                   endpoint_url=server.endpoint, multipart_threshold=5 * MiB,
                   multipart_chunksize=5 * MiB, outage_s=outage_s)


def _stop_after_first_part(store: S3Store, server: SwiftServer, down_s: float | None) -> list[int]:
    """Take the proxy down right after the first UploadPart; bring it back after down_s."""
    fired: list[int] = []

    def hook(**_: object) -> None:
        if fired:
            return
        fired.append(1)
        server.stop_proxy()
        if down_s is not None:
            threading.Timer(down_s, server.start_proxy).start()

    store.client.meta.events.register("after-call.s3.UploadPart", hook)
    return fired


def test_upload_survives_proxy_restart(swift_env: SwiftServer) -> None:
    store = _store(swift_env, outage_s=60)
    store.put_text("before.txt", "written before the outage")
    payload = np.random.default_rng(7).bytes(23 * MiB + 17)  # 5 parts
    fired = _stop_after_first_part(store, swift_env, down_s=3.0)
    store.put_bytes("models/teacher.pt", payload)  # waits out the 3 s outage
    assert fired, "the fault was never injected"
    assert store.get_bytes("models/teacher.pt") == payload  # sha256 verified on read
    assert store.get_text("before.txt") == "written before the outage"
    # Small objects and listings work across a second, shorter outage too.
    swift_env.stop_proxy()
    threading.Timer(2.0, swift_env.start_proxy).start()
    store.put_text("after.txt", "written while the proxy restarted")
    assert store.list() == ["after.txt", "before.txt", "models/teacher.pt"]


def test_cut_upload_is_never_visible(swift_env: SwiftServer) -> None:
    store = _store(swift_env, outage_s=0)  # give up at once: the upload fails mid-way
    old = b"version 1 of the dataset"
    store.put_bytes("datasets/train.extxyz", old)
    fired = _stop_after_first_part(store, swift_env, down_s=None)
    new = np.random.default_rng(8).bytes(17 * MiB)
    try:
        with pytest.raises(StoreError, match="datasets/train.extxyz"):
            store.put_bytes("datasets/train.extxyz", new)
        assert fired
        with pytest.raises(StoreError, match="datasets/big.bin"):
            store.put_bytes("datasets/big.bin", new)  # a new key while still down
    finally:
        swift_env.start_proxy()
    # The previous complete version is what readers see; the half upload left nothing.
    assert store.get_bytes("datasets/train.extxyz") == old
    assert not store.exists("datasets/big.bin")
    assert store.list() == ["datasets/train.extxyz"]
