"""A fine-tune SIGKILLed mid-epoch continues after its last finished epoch and ends exactly
where an uninterrupted run ends (same batches, same weights): every in-process backend
(sevennet, chgnet) through the one contract of :mod:`pfd.models.backends`."""

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
from pfd.models.backends import module

SI_DATA = Path(__file__).resolve().parent / "data/si_paper/train.extxyz"  # see data/README.md
BACKENDS = ["sevennet", "chgnet"]

_CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from pfd import frames as fr
    from pfd.config import FinetuneSpec
    from pfd.models.backends import finetune
    wd = Path(sys.argv[1])
    def progress(row):
        with open(wd.parent / "epochs.log", "a") as fh:
            fh.write(f"{row['step']}\\n")
    finetune(FinetuneSpec(backend=sys.argv[4], epochs=3, batch_size=2, patience_epochs=10),
             fr.read_frames(sys.argv[2]), fr.read_frames(sys.argv[3]), wd, progress=progress)
""")


def _settings(backend: str, epochs: int = 3) -> FinetuneSpec:
    return FinetuneSpec(backend=backend, epochs=epochs, batch_size=2, patience_epochs=10)


@pytest.fixture(scope="module")
def frames() -> tuple[list, list]:
    small = [a for a in fr.read_frames(SI_DATA) if 8 <= len(a) <= 16]
    order = np.random.default_rng(3).permutation(len(small))
    picked = [small[i] for i in order[:6]]
    assert len(picked) == 6
    return picked[:4], picked[4:]


def _weights(backend: str, model_dir: Path) -> dict[str, torch.Tensor]:
    meta = module(backend).read_model_json(model_dir)
    cp = torch.load(model_dir / meta["checkpoint"], map_location="cpu", weights_only=False)
    return cp["model_state_dict"] if backend == "sevennet" else cp["model"]["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_finetune_resumes_to_the_uninterrupted_result(tmp_path: Path, frames,
                                                             backend: str) -> None:
    train, valid = frames
    finetune, read_model_json = module(backend).finetune, module(backend).read_model_json
    settings = _settings(backend)
    rows: list[dict] = []
    reference = finetune(train, valid, tmp_path / "ref", settings, progress=rows.append)
    assert [r["step"] for r in rows] == [1, 2, 3]  # one progress row per epoch
    assert all(np.isfinite(r["valid_force_rmse"]) for r in rows)

    paths = [tmp_path / n for n in ("train.extxyz", "valid.extxyz")]
    fr.write_frames(paths[0], train)
    fr.write_frames(paths[1], valid)
    wd = tmp_path / "killed" / "wd"
    wd.parent.mkdir()
    log = wd.parent / "epochs.log"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(wd), *map(str, paths), backend],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # progress for epoch 1 is sent after its state is saved: killing now lands in epoch 2
    wait_for(lambda: log.is_file() and "1" in log.read_text().split(), proc,
             "the first finished epoch", timeout=300)
    assert kill_tree(proc) >= 1
    assert (wd / "resume.pth").is_file()
    assert "3" not in log.read_text().split()  # it really died before the end

    resumed_rows: list[dict] = []
    model = finetune(train, valid, wd, settings, progress=resumed_rows.append)
    meta, ref_meta = read_model_json(model), read_model_json(reference)
    assert meta["resumed_after_epoch"] in (1, 2)
    assert [r["step"] for r in resumed_rows] == list(range(meta["resumed_after_epoch"] + 1, 4))
    assert meta["best_epoch"] == ref_meta["best_epoch"]
    for got, want in zip(meta["history"], ref_meta["history"], strict=True):
        assert got["epoch"] == want["epoch"]
        assert got["valid_loss"] == pytest.approx(want["valid_loss"], rel=1e-6)
    w, w_ref = _weights(backend, model), _weights(backend, reference)
    assert w.keys() == w_ref.keys()
    for k in w:
        torch.testing.assert_close(w[k], w_ref[k], rtol=1e-6, atol=1e-8)

    # a finished training called again trains nothing and returns the same model
    again: list[dict] = []
    assert finetune(train, valid, wd, settings, progress=again.append) == model
    assert again == []
    assert json.loads((model / "pfd_model.json").read_text())["resumed_after_epoch"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_state_of_other_frames_is_not_used(tmp_path: Path, frames, backend: str) -> None:
    train, valid = frames
    finetune = module(backend).finetune
    one_epoch = _settings(backend, epochs=1)
    finetune(train, valid, tmp_path / "wd", one_epoch)
    model = finetune(train[:3], valid, tmp_path / "wd", one_epoch)
    meta = module(backend).read_model_json(model)
    assert meta["resumed_after_epoch"] is None  # a different set trains from the start
    assert meta["epochs_run"] == 1
