"""DPA fine-tune: from a tiny DPA-3 checkpoint pre-trained here (none can be downloaded).

The pre-trained checkpoint has type_map [C, Si] (C never seen in its data) so that the
fine-tune slims the type map to the data's [Si], and so that the element check has a
type map to check against. The fine-tune labels carry a per-atom energy offset, as
between two DFT codes: the tiny DPA-3 learns forces too slowly in the seconds a test
may take (its force error stays near the force RMS), so the measured gain is the
energy. The multi-task case pre-trains two heads on one shared DPA-3 descriptor.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import read

from pfd import frames as fr
from pfd.config import DPScheduleSpec, FinetuneSpec, StudentSpec
from pfd.models.deepmd import frames_to_deepmd, freeze, load_calculator
from pfd.models.deepmd_finetune import (
    finetune_checkpoint,
    read_checkpoint,
    resolve_head,
)
from pfd.models.deepmd_metrics import dp_test
from pfd.models.deepmd_run import dp_command, latest_checkpoint, run_training

SI_DATA = Path(__file__).resolve().parent / "data/si_paper/train.extxyz"  # see data/README.md
TYPE_MAP = ["C", "Si"]
DPA3 = {
    "type": "dpa3",
    "repflow": {"n_dim": 8, "e_dim": 8, "a_dim": 4, "nlayers": 1, "e_rcut": 5.0,
                "e_rcut_smth": 4.0, "e_sel": 48, "a_rcut": 3.5, "a_rcut_smth": 3.0,
                "a_sel": 16, "axis_neuron": 4},
    "seed": 1,
}
SCHEDULE = {
    "learning_rate": {"type": "exp", "start_lr": 2e-3, "stop_lr": 2e-4, "decay_steps": 20},
}
LOSS = {"type": "ener", "start_pref_e": 0.2, "limit_pref_e": 1.0, "start_pref_f": 100.0,
        "limit_pref_f": 1.0}
DESC_KEY = "atomic_model.descriptor.repflows.layers.0.node_self_mlp.matrix"


#: per-atom energy offset between the "pre-training code" and the fine-tune's labels:
#: absolute DFT energies of two codes (pseudopotentials, references) differ by
#: per-element constants (DESIGN.md), the everyday reason a foundation model is
#: fine-tuned before its energies can be used
OFFSET_EV_PER_ATOM = 0.5


def _splits() -> dict[str, list[Atoms]]:
    pool = [a for a in read(SI_DATA, index=":") if 8 <= len(a) <= 64]
    idx = np.random.default_rng(7).permutation(len(pool))

    def take(a: int, b: int, offset: float = 0.0) -> list[Atoms]:
        return [fr.attach_labels(pool[i], fr.energy(pool[i]) + offset * len(pool[i]),
                                 fr.forces(pool[i])) for i in idx[a:b]]

    return {"pre": take(0, 24), "ft": take(24, 48, OFFSET_EV_PER_ATOM),
            "valid": take(48, 56, OFFSET_EV_PER_ATOM)}


def _state(ckpt: Path) -> dict[str, torch.Tensor]:
    sd = torch.load(ckpt, map_location="cpu", weights_only=True)
    return sd["model"] if "model" in sd else sd


def _pretrain(workdir: Path, frames: list[Atoms], multitask: bool) -> Path:
    """A tiny DPA-3 checkpoint, as a user would bring a DPA-3 from a model zoo."""
    workdir.mkdir(parents=True)
    if not multitask:
        systems = frames_to_deepmd(frames, workdir / "data", TYPE_MAP)
        config: dict[str, Any] = {
            "model": {"type_map": TYPE_MAP, "descriptor": DPA3,
                      "fitting_net": {"neuron": [16, 16], "seed": 1}},
            **SCHEDULE, "loss": LOSS,
            "training": {"training_data": {"systems": [str(s) for s in systems],
                                           "batch_size": 1},
                         "numb_steps": 100, "disp_freq": 20, "save_freq": 100, "seed": 1},
        }
    else:
        half = len(frames) // 2
        a = frames_to_deepmd(frames[:half], workdir / "data" / "a", TYPE_MAP)
        b = frames_to_deepmd(frames[half:], workdir / "data" / "b", TYPE_MAP)
        fit = lambda seed: {"neuron": [16, 16], "seed": seed}  # noqa: E731
        config = {
            "model": {"shared_dict": {"tmap": TYPE_MAP, "dpa3": DPA3},
                      "model_dict": {
                          "pbe": {"type_map": "tmap", "descriptor": "dpa3", "fitting_net": fit(1)},
                          "pbesol": {"type_map": "tmap", "descriptor": "dpa3",
                                     "fitting_net": fit(2)}}},
            **SCHEDULE, "loss_dict": {"pbe": LOSS, "pbesol": LOSS},
            "training": {
                "model_prob": {"pbe": 0.5, "pbesol": 0.5},
                "data_dict": {
                    "pbe": {"training_data": {"systems": [str(s) for s in a], "batch_size": 1}},
                    "pbesol": {"training_data": {"systems": [str(s) for s in b],
                                                 "batch_size": 1}}},
                "numb_steps": 40, "disp_freq": 20, "save_freq": 40, "seed": 1},
        }
    run_training(workdir, config, [workdir / "data"], dp=dp_command(), backend="pt", threads=1)
    ckpt = latest_checkpoint(workdir, "pt")
    assert ckpt is not None
    return workdir / ckpt[0]


@pytest.fixture(scope="module")
def data() -> dict[str, list[Atoms]]:
    return _splits()


@pytest.fixture(scope="module")
def dpa3(tmp_path_factory: pytest.TempPathFactory, data: dict[str, list[Atoms]]
         ) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dpa3")
    ckpt = _pretrain(root / "pretrain", data["pre"], multitask=False)
    frozen = freeze(root / "pretrain", root / "pretrained.pth")
    return {"ckpt": ckpt, "frozen": frozen}


@pytest.mark.slow
def test_read_checkpoint_and_head_rules(dpa3: dict[str, Path]) -> None:
    info = read_checkpoint(dpa3["ckpt"])
    assert not info.multitask and info.heads is None
    assert info.type_maps == {"Default": TYPE_MAP}
    assert info.descriptors == {"Default": "dpa3"}
    assert resolve_head(info, None) == []  # keep the pre-trained fitting net
    assert resolve_head(info, "RANDOM") == ["--model-branch", "RANDOM"]
    with pytest.raises(ValueError, match=r"single-task checkpoint.*'RANDOM'"):
        resolve_head(info, "pbe")
    with pytest.raises(ValueError, match=r"frozen \(TorchScript\).*model.ckpt"):
        read_checkpoint(dpa3["frozen"])
    with pytest.raises(FileNotFoundError, match="finetune.checkpoint"):
        read_checkpoint(dpa3["ckpt"].with_name("nope.pt"))


@pytest.mark.slow
def test_element_missing_from_type_map_is_a_clear_error(
        dpa3: dict[str, Path], data: dict[str, list[Atoms]], tmp_path: Path) -> None:
    frames = [a.copy() for a in data["ft"][:3]]
    frames[1].symbols[0] = "Ge"
    frames[2].symbols[:2] = "O"
    with pytest.raises(ValueError, match=r"element\(s\) \['Ge', 'O'\].*\['C', 'Si'\]"):
        finetune_checkpoint(dpa3["ckpt"], frames, [], tmp_path / "ft", DPScheduleSpec(steps=10))
    assert not (tmp_path / "ft" / "train.log").exists()  # refused before any training


@pytest.mark.slow
def test_config_checks_the_dpa_checkpoint(dpa3: dict[str, Path], tmp_path: Path) -> None:
    import yaml
    from configs import base

    from pfd.config import ConfigError
    from pfd.preflight import check_config, check_config_file

    raw = base()
    raw["finetune"] = {"backend": "deepmd"}
    with pytest.raises(ConfigError, match=r"finetune.checkpoint is required"):
        check_config(raw)
    raw["finetune"] = {"backend": "sevennet", "model_branch": "pbe"}
    with pytest.raises(ConfigError, match=r"apply to backend 'deepmd' only"):
        check_config(raw)

    # a checkpoint path relative to the config file; Si is in its type map
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "dpa3.pt").symlink_to(dpa3["ckpt"])
    raw = base()
    raw["finetune"] = {"backend": "deepmd", "checkpoint": "ckpt/dpa3.pt", "steps": 100}
    (tmp_path / "pfd.yaml").write_text(yaml.safe_dump(raw))
    cfg = check_config_file(tmp_path / "pfd.yaml")
    assert cfg.finetune.checkpoint == str((tmp_path / "ckpt" / "dpa3.pt").resolve())

    # structures with an element the checkpoint lacks fail at load, before any DFT
    raw["structures"]["g"] = {"build": {"element": "Ge", "crystal": "diamond", "a_A": 5.66}}
    raw["init"]["structures"] = ["d", "g"]
    raw["labeller"]["qe"]["pseudopotentials"]["Ge"] = "Ge.pbe-kjpaw.UPF"
    (tmp_path / "pfd.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"element\(s\) \['Ge'\].*\['C', 'Si'\]"):
        check_config_file(tmp_path / "pfd.yaml")
    raw = base()
    raw["finetune"] = {"backend": "deepmd", "checkpoint": str(dpa3["ckpt"]),
                       "model_branch": "pbe"}
    with pytest.raises(ConfigError, match=r"single-task checkpoint"):
        check_config(raw)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_finetune_dpa3_changes_weights_and_lowers_error(
        dpa3: dict[str, Path], data: dict[str, list[Atoms]], tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = []
    settings = DPScheduleSpec(steps=150, batch_size=1, start_lr=2e-3, stop_lr=2e-4,
                              disp_freq=25, save_freq=75)
    model_dir = finetune_checkpoint(dpa3["ckpt"], data["ft"], data["valid"], tmp_path / "ft",
                                    settings, progress=rows.append)

    meta = json.loads((model_dir / "pfd_model.json").read_text())
    assert meta["kind"] == "finetuned" and meta["backend"] == "deepmd"
    assert meta["type_map"] == ["Si"]  # slimmed from the checkpoint's [C, Si]
    assert meta["descriptor"] == "dpa3"
    assert meta["base"]["type_map"] == {"Default": TYPE_MAP}
    log = (tmp_path / "ft" / "train.log").read_text()
    assert "according to pretrained branch 'Default'" in log  # --use-pretrain-script path

    # progress was reported while training, ending at the last step
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})
    assert rows[-1]["step"] == 150 and math.isfinite(rows[-1]["rmse_f_val"])

    # the descriptor was inherited (same shape) and then trained (different values)
    before = _state(dpa3["ckpt"])[f"model.Default.{DESC_KEY}"]
    after = _state(tmp_path / "ft" / "model.ckpt.pt")[f"model.Default.{DESC_KEY}"]
    assert before.shape == after.shape
    assert float((after - before).abs().max()) > 1e-5

    # and it fits the fine-tune data far better than the pre-trained model it started
    # from: the energy reference is learnt, the forces are not made worse
    pre = dp_test(load_calculator(dpa3["frozen"]), data["valid"])
    post = dp_test(model_dir, data["valid"])
    print(f"valid energy RMSE {1000 * pre.energy_rmse_per_atom_eV:.0f} -> "
          f"{1000 * post.energy_rmse_per_atom_eV:.0f} meV/atom; force RMSE "
          f"{pre.force_rmse_eV_A:.3f} -> {post.force_rmse_eV_A:.3f} eV/Å")
    assert pre.energy_rmse_per_atom_eV > 0.3
    assert post.energy_rmse_per_atom_eV < 0.3 * pre.energy_rmse_per_atom_eV
    assert post.force_rmse_eV_A < pre.force_rmse_eV_A + 0.02


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_finetune_multitask_head(data: dict[str, list[Atoms]], tmp_path: Path) -> None:
    ckpt = _pretrain(tmp_path / "pretrain", data["pre"], multitask=True)
    info = read_checkpoint(ckpt)
    assert info.heads == ["pbe", "pbesol"]
    with pytest.raises(ValueError, match=r"multi-task checkpoint with heads \['pbe', 'pbesol'\]"):
        finetune_checkpoint(ckpt, data["ft"], [], tmp_path / "x", DPScheduleSpec(steps=10))
    with pytest.raises(ValueError, match=r"no head 'hse'"):
        finetune_checkpoint(ckpt, data["ft"], [], tmp_path / "x", DPScheduleSpec(steps=10),
                            head="hse")

    settings = DPScheduleSpec(steps=20, batch_size=1, start_lr=1e-4, stop_lr=1e-5,
                              disp_freq=10, save_freq=20)
    model_dir = finetune_checkpoint(ckpt, data["ft"][:8], [], tmp_path / "ft", settings,
                                    head="pbesol")
    assert "pretrained branch 'pbesol'" in (tmp_path / "ft" / "train.log").read_text()

    # the fitting net starts from the chosen head: after a short, gentle fine-tune its
    # weights are still far closer to pbesol's than to pbe's
    pre, post = _state(ckpt), _state(tmp_path / "ft" / "model.ckpt.pt")
    keys = [k for k in post if ".fitting_net." in k and k.endswith("matrix")]
    assert keys
    dist = {head: sum(float((post[k] - pre[k.replace(".Default.", f".{head}.")]).norm())
                      for k in keys) for head in ("pbe", "pbesol")}
    assert dist["pbesol"] < 0.2 * dist["pbe"], dist
    assert json.loads((model_dir / "pfd_model.json").read_text())["base"]["head"] == "pbesol"


def test_student_settings_are_a_training_schedule() -> None:
    # the fine-tune and the student write their schedules with the same code
    spec = FinetuneSpec(backend="deepmd", checkpoint="x.pt")
    assert spec.dp_schedule().resolved_save_freq() == 500
    assert StudentSpec(steps=2000).resolved_decay_steps() == 10


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_workflow_step_finetunes_with_deepmd(dpa3: dict[str, Path], data: dict[str, list[Atoms]],
                                             tmp_path: Path) -> None:
    from configs import base

    from pfd import model_cache, run_store, steps
    from pfd.config import parse_config
    from pfd.models import registry

    raw = base()
    raw["finetune"] = {"backend": "deepmd", "checkpoint": str(dpa3["ckpt"]), "steps": 20,
                       "batch_size": 1, "valid_fraction": 0.2}
    raw["store"] = str(tmp_path / "store")
    raw["workdir"] = str(tmp_path / "work")
    ctx = run_store.make_context(parse_config(raw))
    ctx.store.put_frames("datasets/d0.extxyz", data["ft"][:10])
    rows: list[dict[str, Any]] = []
    rec = steps.finetune_model(ctx, ["datasets/d0.extxyz"], progress=rows.append)
    assert rec["reused"] is False and rec["steps"] == 20 and rec["n_train"] + rec["n_valid"] == 10
    assert rows and rows[-1]["step"] == 20
    local = model_cache.fetch_model(ctx.store_url, rec["model"], tmp_path / "cache")
    probe = data["valid"][0].copy()
    probe.calc = registry.load_calculator(local)
    assert np.isfinite(probe.get_potential_energy())
    assert steps.finetune_model(ctx, ["datasets/d0.extxyz"])["reused"] is True
