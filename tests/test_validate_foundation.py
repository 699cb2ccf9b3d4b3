"""``validation.foundation``: the raw foundation validated beside the run's models.

The foundation answers in its own energy reference, so only energy *differences* may be
compared with the others: a copy of the same model shifted by a constant per atom must
give the same phase energy difference and vacancy formation energy, and the foundation
must never appear in a parity plot against DFT labels.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ase.build import bulk

from pfd.config import ConfigError, ValidationSpec, parse_config
from pfd.validate import quantities
from pfd.validate.run import FOUNDATION, Model, foundation_model, run_validation

ROOT = Path(__file__).resolve().parents[1]


def _raw() -> dict:
    return yaml.safe_load((ROOT / "tests/data/tiny.yaml").read_text())


def test_foundation_beside_a_shifted_copy_gives_the_same_differences() -> None:
    from pfd.models.sevennet import ShiftedCalculator, foundation_calculator

    raw = _raw()
    raw["validation"]["foundation"] = True
    cfg = parse_config(raw)
    models = {"teacher": Model(lambda: ShiftedCalculator(foundation_calculator(),
                                                         {"Si": -3.0}), "shifted"),
              FOUNDATION: foundation_model(cfg)}
    spec = ValidationSpec(
        eos={"n_points": 5, "volume_strain": 0.04, "dft_points": 0},
        vacancy={"dft": False, "max_steps": 3},
        phonons={"enabled": False}, diffusion={"enabled": False},
        parity={"max_frames_per_dataset": 2})
    si = bulk("Si", "diamond", a=5.46, cubic=True)
    hd = bulk("Si", "fcc", a=3.87, cubic=True)
    labelled = [si.copy()]
    res = run_validation(spec, {"diamond": si, "fcc": hd}, models,
                         datasets={"init": lambda: labelled},
                         eos_structures=["diamond", "fcc"], vacancy_structure="diamond",
                         parity_skip={"init": [FOUNDATION, "teacher"]})
    t = quantities.table(res).values
    de = t["eos.fcc.dE0_meV_atom"]
    assert de[FOUNDATION].value > 100  # fcc far above diamond for SevenNet-0
    assert de["teacher"].value == pytest.approx(de[FOUNDATION].value, abs=1e-3)
    ef = t["vacancy.E_f_eV"]
    assert ef["teacher"].value == pytest.approx(ef[FOUNDATION].value, abs=1e-4)  # float32
    # E0 itself differs by the shift: the difference is the only like-for-like number
    e0 = {m: res.eos["diamond"][m].fit.e0_eV_atom for m in ("teacher", FOUNDATION)}
    assert e0["teacher"] - e0[FOUNDATION] == pytest.approx(-3.0, abs=1e-3)
    assert not res.parity.get("init")


def test_foundation_needs_a_backend_with_a_calculator() -> None:
    raw = _raw()
    raw["validation"]["foundation"] = True
    raw["finetune"].update(backend="deepmd", checkpoint="model.ckpt-1.pt")
    with pytest.raises(ConfigError, match="validation.foundation"):
        parse_config(raw)
