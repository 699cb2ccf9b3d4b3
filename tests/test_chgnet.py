"""The chgnet backend: CHGNet 0.3.0 (weights in the chgnet wheel) fine-tuned for real.

Units and signs at the boundary are checked by labelling frames with CHGNet itself
(energies, forces, stresses through its ASE calculator) and asking the training loop what
the untouched model's loss on them is: any slip in eV/atom, GPa or the stress sign shows
up as a loss far from zero. Learning is checked on real DFT frames of the PFD paper that
the model never trained on, in a labeller reference ~100 eV/atom away from CHGNet's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from pfd import frames as fr
from pfd.config import FinetuneSpec
from pfd.metrics import evaluate
from pfd.models import chgnet
from pfd.models.registry import load_calculator
from pfd.models.type_maps import foundation_type_map

SI_DATA = Path(__file__).resolve().parent / "data/si_paper/train.extxyz"  # see data/README.md


def test_chgnet_settings_default_to_its_shipped_model_and_its_loss_units() -> None:
    spec = FinetuneSpec(backend="chgnet")
    assert (spec.foundation, spec.stress_weight, spec.huber_delta) == ("0.3.0", 0.1, 0.1)
    assert FinetuneSpec(backend="chgnet", stress_weight=1.0).stress_weight == 1.0
    assert FinetuneSpec().foundation == "7net-0"  # sevennet's defaults are untouched
    dump = spec.backend_dump()
    assert "random_init" not in dump and "checkpoint" not in dump and "steps" not in dump


def test_unknown_or_missing_chgnet_foundation_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'0\.9\.9' is not a CHGNet pretrained.*0\.3\.0"):
        chgnet.load_model("0.9.9")
    with pytest.raises(FileNotFoundError, match=r"chgnet model file not found"):
        chgnet.load_model(str(tmp_path / "mine.pth.tar"))


def test_pfd_check_knows_chgnet_elements_without_loading_it() -> None:
    known = foundation_type_map("chgnet", "0.3.0")
    assert known is not None and {"H", "Si", "O", "Pu"} <= set(known) and len(known) == 94


def _self_labelled(n: int) -> list:
    calc = chgnet.foundation_calculator("0.3.0")
    out = []
    for i in range(n):
        a = bulk("Si", "diamond", a=5.43, cubic=True)
        a.set_cell(a.cell * (0.97 + 0.02 * i), scale_atoms=True)  # stresses of both signs
        a.rattle(0.05, seed=i)
        a.calc = calc
        out.append(fr.attach_labels(a, a.get_potential_energy(), a.get_forces(),
                                    a.get_stress()))
    return out


@pytest.mark.slow
def test_units_at_the_boundary_give_zero_loss_on_chgnets_own_labels(tmp_path: Path) -> None:
    frames = _self_labelled(4)
    assert min(fr.stress(a)[0] for a in frames) < 0 < max(fr.stress(a)[0] for a in frames)
    spec = FinetuneSpec(backend="chgnet", epochs=0)  # epoch 0 only: the start as it is
    model_dir = chgnet.finetune(frames[:2], frames[2:], tmp_path / "ft", spec)
    meta = chgnet.read_model_json(model_dir)
    start = meta["history"][0]
    assert meta["stress_trained"] is True and meta["epochs_run"] == 0
    assert abs(meta["energy_shift_eV"]["Si"]) < 1e-5
    assert start["valid_energy_rmse"] < 1e-5 and start["valid_force_rmse"] < 1e-4
    assert start["valid_loss"] < 1e-9  # energy + force + stress (GPa, ASE sign)


@pytest.mark.slow
def test_finetune_learns_dft_frames_in_the_labellers_reference(tmp_path: Path) -> None:
    data = [a for a in fr.read_frames(SI_DATA) if 8 <= len(a) <= 16]
    order = np.random.default_rng(5).permutation(len(data))
    offset = -100.0  # eV/atom: a pseudopotential convention far from CHGNet's (QE Si ~ -107)
    shifted = [fr.attach_labels(a, fr.energy(a) + offset * len(a), fr.forces(a), None)
               for a in (data[i] for i in order[:24])]
    train, valid, test = shifted[:12], shifted[12:16], shifted[16:]
    spec = FinetuneSpec(backend="chgnet", epochs=4, batch_size=4, patience_epochs=4)
    rows: list[dict] = []
    model_dir = chgnet.finetune(train, valid, tmp_path / "ft", spec, progress=rows.append)
    meta = chgnet.read_model_json(model_dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and meta["stress_trained"] is False
    assert meta["energy_shift_eV"]["Si"] == pytest.approx(offset, abs=1.0)
    assert meta["best_epoch"] >= 1  # it learned something the start did not know

    tuned = load_calculator(model_dir)  # the registry dispatches on pfd_model.json
    base = load_calculator(chgnet.save_foundation(tmp_path / "m0", "0.3.0",
                                                  meta["energy_shift_eV"]))
    got, start = evaluate(tuned, test)[0], evaluate(base, test)[0]
    # the labeller's reference, 100 eV/atom from CHGNet's (the fit on 12 mixed-phase frames
    # is itself tens of meV/atom off: seen 43 before and 69 after, which is what the
    # forgetting check is for; this only says the reference is right)
    assert got.energy_rmse_meV_atom < 200
    assert got.force_rmse_eV_A < start.force_rmse_eV_A  # held-out frames no model trained on


@pytest.mark.slow
def test_workflow_step_finetunes_with_chgnet_and_reuses_it(tmp_path: Path) -> None:
    """The run's fine-tune step, store and model cache, with ``finetune.backend: chgnet``."""
    from configs import base

    from pfd import model_cache, run_store, steps
    from pfd.config import parse_config

    raw = base()
    raw["finetune"] = {"backend": "chgnet", "epochs": 2, "batch_size": 2, "min_valid_frames": 2,
                       "valid_fraction": 0.25}
    raw["store"], raw["workdir"] = str(tmp_path / "store"), str(tmp_path / "work")
    ctx = run_store.make_context(parse_config(raw))
    frames = [a for a in fr.read_frames(SI_DATA) if 8 <= len(a) <= 16][:8]
    ctx.store.put_frames("datasets/d0.extxyz", frames)
    rows: list[dict] = []
    rec = steps.finetune_model(ctx, ["datasets/d0.extxyz"], progress=rows.append)
    assert rec["reused"] is False and rec["n_train"] + rec["n_valid"] == 8
    assert [r["step"] for r in rows] == [1, 2] and rec["epochs_run"] == 2
    local = model_cache.fetch_model(ctx.store_url, rec["model"], tmp_path / "cache")
    assert chgnet.read_model_json(local)["foundation"] == "0.3.0"
    probe = fr.strip_labels(frames[0])
    probe.calc = load_calculator(local)
    assert abs(probe.get_potential_energy() - fr.energy(frames[0])) / len(probe) < 0.2
    assert steps.finetune_model(ctx, ["datasets/d0.extxyz"])["reused"] is True


@pytest.mark.slow
def test_warm_start_continues_from_the_previous_model(tmp_path: Path) -> None:
    """``finetune.warm_start``: M_2 starts from M_1, which is part of M_2's identity."""
    from configs import base

    from pfd import run_store, steps
    from pfd.config import parse_config

    raw = base()
    raw["finetune"] = {"backend": "chgnet", "epochs": 2, "batch_size": 2, "min_valid_frames": 2,
                       "valid_fraction": 0.25, "warm_start": True}
    raw["store"], raw["workdir"] = str(tmp_path / "store"), str(tmp_path / "work")
    ctx = run_store.make_context(parse_config(raw))
    frames = [a for a in fr.read_frames(SI_DATA) if 8 <= len(a) <= 16][:16]
    ctx.store.put_frames("datasets/d0.extxyz", frames[:8])
    ctx.store.put_frames("datasets/d1.extxyz", frames[8:])
    m1 = steps.finetune_model(ctx, ["datasets/d0.extxyz"], previous=None)
    assert m1["warm_start_from"] is None  # nothing before it: from the foundation
    keys = ["datasets/d0.extxyz", "datasets/d1.extxyz"]
    warm = steps.finetune_model(ctx, keys, previous=m1["model"])
    assert warm["warm_start_from"] == m1["model"] and not warm["reused"]
    cold_ctx = run_store.make_context(parse_config({**raw, "finetune": {
        **raw["finetune"], "warm_start": False}}))
    cold = steps.finetune_model(cold_ctx, keys, previous=m1["model"])
    assert cold["warm_start_from"] is None and cold["model"] != warm["model"]
    hist = {name: ctx.store.get_json(f"{rec['model']}/pfd_model.json")["history"][0]
            for name, rec in (("warm", warm), ("cold", cold))}
    # epoch 0 is the starting weights on the same validation frames: M_1 knows them better
    assert hist["warm"]["valid_force_rmse"] < hist["cold"]["valid_force_rmse"]


def test_pfd_check_refuses_an_element_chgnet_cannot_represent() -> None:
    from configs import base

    from pfd.config import ConfigError, parse_config
    from pfd.preflight import _check_foundation

    raw = base()
    raw["finetune"] = {"backend": "chgnet"}
    cfg = parse_config(raw)
    _check_foundation(cfg, ["Si", "O", "Pu"])  # Z <= 94: fine
    with pytest.raises(ConfigError, match=r"finetune.foundation: '0.3.0' has no element\(s\) "
                                          r"\['Am'\]"):
        _check_foundation(cfg, ["Si", "Am"])
