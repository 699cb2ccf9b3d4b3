"""The ``labeller:`` config: every engine rejects an element it cannot label at load time,
naming the field to change; ``make_labeller`` builds the configured engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from requires import needs

from pfd.config import ConfigError
from pfd.label.cp2k import CP2KLabeller
from pfd.label.qe import QELabeller
from pfd.label.vasp import VaspLabeller
from pfd.preflight import check_config

HAVE_CP2K_DATA = Path("/usr/share/cp2k/BASIS_MOLOPT").is_file()


def raw(labeller: dict[str, Any], extra_element: str | None = None) -> dict[str, Any]:
    structures: dict[str, Any] = {
        "si": {"build": {"element": "Si", "crystal": "diamond", "a_A": 5.43}}}
    if extra_element:
        structures["x"] = {"build": {"element": extra_element, "crystal": "fcc", "a_A": 5.2}}
    return {"structures": structures, "init": {"structures": ["si"]}, "labeller": labeller,
            "stages": [{"name": "s", "groups": [{"structures": ["si"],
                                                 "temperatures_K": [300]}]}]}


@needs(HAVE_CP2K_DATA, "cp2k-data missing")
def test_cp2k_element_without_basis_fails_at_load() -> None:
    cfg = check_config(raw({"engine": "cp2k"}))
    from pfd.steps import make_labeller

    lab = make_labeller(cfg)
    assert isinstance(lab, CP2KLabeller) and lab.elements == ("Si",)
    with pytest.raises(ConfigError, match=r"labeller\.cp2k\.basis_sets: no basis set "
                                          r"'DZVP-MOLOPT-SR-GTH' for element Ce"):
        check_config(raw({"engine": "cp2k"}, extra_element="Ce"))
    # a per-element choice fixes it... unless basis and potential valences disagree
    with pytest.raises(ConfigError, match=r"labeller\.cp2k\.potentials: element Cu: basis "
                                          r"set 'DZVP-MOLOPT-SR-GTH' is for 11 valence"):
        check_config(raw({"engine": "cp2k", "cp2k": {"potentials": {"Cu": "GTH-PBE-q19"}}},
                         extra_element="Cu"))
    with pytest.raises(ConfigError, match=r"labeller\.cp2k\.potentials: no potential 'X'"):
        check_config(raw({"engine": "cp2k", "cp2k": {"potentials": {"Si": "X"}}}))


def test_cp2k_missing_data_dir_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"labeller\.cp2k\.data_dir: basis_file .* not found"):
        check_config(raw({"engine": "cp2k", "cp2k": {"data_dir": str(tmp_path)}}))


def test_vasp_needs_potcars_for_every_element(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PMG_VASP_PSP_DIR", raising=False)
    with pytest.raises(ConfigError, match=r"labeller\.vasp\.psp_dir: no POTCAR directory"):
        check_config(raw({"engine": "vasp"}))
    d = tmp_path / "psp/POT_PAW_PBE_64"
    d.mkdir(parents=True)
    (d / "POTCAR.Si").write_text("fake")
    monkeypatch.setenv("PMG_VASP_PSP_DIR", str(tmp_path / "psp"))
    cfg = check_config(raw({"engine": "vasp"}))
    from pfd.steps import make_labeller

    assert isinstance(make_labeller(cfg), VaspLabeller)
    with pytest.raises(ConfigError, match=r"labeller\.vasp\.potcar_symbols: no POTCAR "
                                          r"'Cu_pv' for element Cu"):
        check_config(raw({"engine": "vasp"}, extra_element="Cu"))


def test_qe_stays_the_default_engine() -> None:
    cfg = check_config(raw({"qe": {"pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"}}}))
    from pfd.steps import make_labeller

    assert isinstance(make_labeller(cfg), QELabeller)
    assert cfg.labeller.max_failure_fraction == 0.2 and cfg.labeller.keep_scratch is False


@pytest.mark.parametrize(("labeller", "pattern"), [
    ({"engine": "gpaw"}, r"labeller\.engine: .*'qe', 'cp2k' or 'vasp'"),
    ({"max_failure_fraction": 1.5}, r"labeller\.max_failure_fraction"),
    ({"cp2k": {"mpirun": "mpirun -np 4"}}, r"labeller\.cp2k\.mpirun: .*\{ranks\}"),
    ({"vasp": {"incar": {"encut": 400}}},
     r"labeller\.vasp\.incar: .*encut: set by pfd \(use encut_eV\)"),
    ({"vasp": {"extra_handlers": ["AnyHandler"]}}, r"labeller\.vasp\.extra_handlers\.0"),
    ({"qe": {"scf_fix_attempts": 9}}, r"labeller\.qe\.scf_fix_attempts"),
])
def test_bad_labeller_settings_name_the_field(labeller: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        check_config(raw(labeller))
