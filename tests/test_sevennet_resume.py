"""A SevenNet fine-tune SIGKILLed mid-epoch continues after its last finished epoch and
ends exactly where an uninterrupted run ends (same batches, same weights)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from procs import kill_tree, wait_for

from pfd import frames as fr
from pfd.config import FinetuneSpec
from pfd.models.sevennet import finetune, read_model_json

SI_DATA = Path(__file__).resolve().parent / "data/si_paper/train.extxyz"  # see data/README.md
SETTINGS = FinetuneSpec(epochs=3, batch_size=2, patience_epochs=10)

_CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from pfd import frames as fr
    from pfd.config import FinetuneSpec
    from pfd.models.sevennet import finetune
    wd = Path(sys.argv[1])
    def progress(row):
        with open(wd.parent / "epochs.log", "a") as fh:
            fh.write(f"{row['step']}\\n")
    finetune(fr.read_frames(sys.argv[2]), fr.read_frames(sys.argv[3]), wd,
             FinetuneSpec(epochs=3, batch_size=2, patience_epochs=10),
             progress=progress)
""")


@pytest.fixture(scope="module")
def frames() -> tuple[list, list]:
    small = [a for a in fr.read_frames(SI_DATA) if 8 <= len(a) <= 16]
    order = np.random.default_rng(3).permutation(len(small))
    picked = [small[i] for i in order[:6]]
    assert len(picked) == 6
    return picked[:4], picked[4:]


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    meta = read_model_json(model_dir)
    cp = torch.load(model_dir / meta["checkpoint"], map_location="cpu", weights_only=False)
    return cp["model_state_dict"]


@pytest.mark.slow
def test_killed_finetune_resumes_to_the_uninterrupted_result(tmp_path: Path, frames) -> None:
    train, valid = frames
    rows: list[dict] = []
    reference = finetune(train, valid, tmp_path / "ref", SETTINGS, progress=rows.append)
    assert [r["step"] for r in rows] == [1, 2, 3]  # one progress row per epoch
    assert all(np.isfinite(r["valid_force_rmse"]) for r in rows)

    paths = [tmp_path / n for n in ("train.extxyz", "valid.extxyz")]
    fr.write_frames(paths[0], train)
    fr.write_frames(paths[1], valid)
    wd = tmp_path / "killed" / "wd"
    wd.parent.mkdir()
    log = wd.parent / "epochs.log"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(wd), *map(str, paths)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # progress for epoch 1 is sent after its state is saved: killing now lands in epoch 2
    wait_for(lambda: log.is_file() and "1" in log.read_text().split(), proc,
             "the first finished epoch", timeout=300)
    assert kill_tree(proc) >= 1
    assert (wd / "resume.pth").is_file()
    assert "3" not in log.read_text().split()  # it really died before the end

    resumed_rows: list[dict] = []
    model = finetune(train, valid, wd, SETTINGS, progress=resumed_rows.append)
    meta, ref_meta = read_model_json(model), read_model_json(reference)
    assert meta["resumed_after_epoch"] in (1, 2)
    assert [r["step"] for r in resumed_rows] == list(range(meta["resumed_after_epoch"] + 1, 4))
    assert meta["best_epoch"] == ref_meta["best_epoch"]
    for got, want in zip(meta["history"], ref_meta["history"], strict=True):
        assert got["epoch"] == want["epoch"]
        assert got["valid_loss"] == pytest.approx(want["valid_loss"], rel=1e-6)
    w, w_ref = _weights(model), _weights(reference)
    assert w.keys() == w_ref.keys()
    for k in w:
        torch.testing.assert_close(w[k], w_ref[k], rtol=1e-6, atol=1e-8)

    # a finished training called again trains nothing and returns the same model
    again: list[dict] = []
    assert finetune(train, valid, wd, SETTINGS, progress=again.append) == model
    assert again == []
    assert json.loads((model / "pfd_model.json").read_text())["resumed_after_epoch"] == 3


@pytest.mark.slow
def test_resume_state_of_other_frames_is_not_used(tmp_path: Path, frames) -> None:
    train, valid = frames
    one_epoch = FinetuneSpec(epochs=1, batch_size=2)
    finetune(train, valid, tmp_path / "wd", one_epoch)
    model = finetune(train[:3], valid, tmp_path / "wd", one_epoch)
    meta = read_model_json(model)
    assert meta["resumed_after_epoch"] is None  # a different set trains from the start
    assert meta["epochs_run"] == 1
