"""Config validation: every mistake is caught before work starts, naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from configs import base

from pfd.config import ConfigError, PFDConfig
from pfd.preflight import check_config, check_config_file

ROOT = Path(__file__).resolve().parents[1]


def test_examples_validate() -> None:
    for cfg_path in (ROOT / "examples/si/pfd.yaml", ROOT / "tests/data/tiny.yaml"):
        cfg = check_config_file(cfg_path)
        assert isinstance(cfg, PFDConfig)
        assert len(cfg.stages) == 2
        assert cfg.distill is not None


def test_si_phases_example_builds_every_phase_it_names() -> None:
    """The paper's case: six bulk phases in 8-atom cells and a 15-atom vacancy (≤ 16 atoms
    per DFT frame), three stages, validation over every bulk phase with diamond first."""
    from pfd.structures import load_structures

    cfg = check_config_file(ROOT / "examples/si-phases/pfd.yaml")
    assert [s.name for s in cfg.stages] == ["semiconducting", "metallic", "vacancy"]
    sizes = {k: len(v[0]) for k, v in load_structures(cfg).items()}
    assert sizes == {"diamond": 8, "hex-diamond": 8, "bc8": 8, "beta-sn": 8, "fcc": 8,
                     "hcp": 8, "vacancy": 15}
    assert cfg.validation.eos.structures is not None
    assert cfg.validation.eos.structures[0] == "diamond"


def test_unknown_key_names_field_path() -> None:
    raw = base()
    raw["init"]["perturb"] = {"atom_displacment_A": 0.1}
    with pytest.raises(ConfigError) as e:
        check_config(raw)
    assert "init.perturb.atom_displacment_A" in str(e.value)
    assert "unknown field" in str(e.value)


def test_negative_temperature() -> None:
    raw = base()
    raw["stages"][0]["groups"][0]["temperatures_K"] = [-5]
    with pytest.raises(ConfigError, match=r"stages\.0\.groups\.0\.temperatures_K\.0"):
        check_config(raw)


def test_unknown_structure_reference() -> None:
    raw = base()
    raw["stages"][0]["groups"][0]["structures"] = ["nope"]
    with pytest.raises(ConfigError, match=r"stages\[0\]\.groups\[0\]\.structures.*'nope'"):
        check_config(raw)


def test_missing_structure_file(tmp_path: Path) -> None:
    raw = base()
    raw["structures"]["f"] = {"file": "missing.extxyz"}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"structures\.f\.file: file not found"):
        check_config_file(p)


def test_structure_file_relative_to_config(tmp_path: Path) -> None:
    from ase.build import bulk
    from ase.io import write

    write(tmp_path / "si.extxyz", bulk("Si", "diamond", a=5.43, cubic=True))
    raw = base()
    raw["structures"] = {"d": {"file": "si.extxyz"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    cfg = check_config_file(tmp_path / "c.yaml")
    assert cfg.structures["d"].file == (tmp_path / "si.extxyz").resolve()


def test_element_without_pseudopotential() -> None:
    raw = base()
    raw["structures"]["u"] = {"build": {"element": "Xe", "crystal": "fcc", "a_A": 6.2}}
    raw["labeller"] = {"qe": {}}
    with pytest.raises(ConfigError, match=r"labeller\.qe\.pseudopotentials:.*Xe"):
        check_config(raw)


def test_explicit_pseudopotential_must_exist() -> None:
    raw = base()
    raw["labeller"]["qe"]["pseudopotentials"] = {"Si": "Si.does-not-exist.UPF"}
    with pytest.raises(ConfigError, match="Si.does-not-exist.UPF not found"):
        check_config(raw)


def test_npt_needs_pressures_and_literal_choices() -> None:
    raw = base()
    raw["stages"][0]["groups"][0]["ensemble"] = "npt"
    with pytest.raises(ConfigError, match="pressures_GPa"):
        check_config(raw)
    raw = base()
    raw["stages"][0]["select"] = {"method": "best"}
    with pytest.raises(ConfigError, match=r"stages\.0\.select\.method.*'entropy' or 'random'"):
        check_config(raw)


def test_run_id_default_is_stable_and_config_sensitive() -> None:
    a, b = check_config(base()), check_config(base())
    assert a.resolved_run_id == b.resolved_run_id
    raw = base()
    raw["stages"][0]["max_iterations"] = 7
    assert check_config(raw).resolved_run_id != a.resolved_run_id
    raw["run_id"] = "../escape"
    with pytest.raises(ConfigError, match="run_id"):
        check_config(raw)


def test_cli_check(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pfd.cli import app

    ok = CliRunner().invoke(app, ["check", str(ROOT / "examples/si/pfd.yaml")])
    assert ok.exit_code == 0 and "OK" in ok.output
    raw = base()
    raw["stages"][0]["groups"][0]["timestep"] = 1
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    bad = CliRunner().invoke(app, ["check", str(tmp_path / "bad.yaml")])
    assert bad.exit_code == 2
    assert "stages.0.groups.0.timestep" in bad.output
