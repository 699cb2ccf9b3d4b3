"""Thread pinning: one helper for in-process steps and engine subprocesses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pfd.label.custodian_run import MPI_ENV, engine_env
from pfd.models.deepmd_run import thread_env as dp_thread_env
from pfd.threads import THREAD_VARS, pin_threads, thread_env


def test_thread_env_pins_every_library() -> None:
    assert thread_env(3) == {v: "3" for v in THREAD_VARS}
    assert thread_env(0) == {v: "1" for v in THREAD_VARS}  # never zero threads
    assert engine_env(2) == {**thread_env(2), **MPI_ENV}
    dp = dp_thread_env(2)
    assert {k: dp[k] for k in THREAD_VARS} == thread_env(2)
    assert dp["DP_INTRA_OP_PARALLELISM_THREADS"] == "2"


def test_pin_threads_sets_env_and_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    for v in THREAD_VARS:
        monkeypatch.setenv(v, "7")
    before = torch.get_num_threads()
    try:
        assert pin_threads(1, override=False, torch=False) == 1
        assert all(os.environ[v] == "7" for v in THREAD_VARS)  # the user's setting is kept
        pin_threads(1, torch=True)
        assert all(os.environ[v] == "1" for v in THREAD_VARS)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_sevennet_missing_checkpoint_file_is_named(tmp_path: Path) -> None:
    pytest.importorskip("sevenn")
    from pfd.models.sevennet import checkpoint_path

    for arg in (str(tmp_path / "nope" / "model.pth"), "model.pth", "weights.pt"):
        with pytest.raises(FileNotFoundError, match="checkpoint file not found") as err:
            checkpoint_path(arg)
        assert arg.split("/")[-1] in str(err.value)
    real = tmp_path / "ok.pth"
    real.write_bytes(b"")
    assert checkpoint_path(str(real)) == str(real.resolve())
