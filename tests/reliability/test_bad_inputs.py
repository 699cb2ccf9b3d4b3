"""Guarantee 6: a bad input stops the real CLI before any work, with one message naming
the file or field, a non-zero exit, and nothing written to the store or work directory.

Each case is its own test. Every case goes through ``pfd check`` (``pfd validate`` until
the rename lands); the cases that used to pass the check and fail only inside a run go
through ``pfd run`` as well.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from configs import base
from helpers import SECRET, Fault, check_command, cli_env, pfd, record

pytestmark = pytest.mark.slow

Raw = dict[str, Any]


@dataclass(frozen=True)
class Case:
    # edits the base config in place, given the test's directory (for auxiliary files);
    # or returns the config file's full text
    edit: Callable[[Raw, Path], str | None]
    says: tuple[str, ...]          # substrings the error must contain
    run_too: bool = False          # also through `pfd run`


def _set(path: str, value: Any) -> Callable[[Raw, Path], None]:
    """``a.b.0.c`` = value in the raw config."""
    def edit(raw: Raw, _tmp: Path) -> None:
        *head, last = path.split(".")
        node: Any = raw
        for p in head:
            node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return edit


def _text(text: str) -> Callable[[Raw, Path], str]:
    return lambda _raw, _tmp: text


def _file(content: str, name: str = "s.extxyz") -> Callable[[Raw, Path], None]:
    def edit(raw: Raw, tmp: Path) -> None:
        (tmp / name).write_text(content)
        raw["structures"]["f"] = {"file": name}
    return edit


def _xyz(lattice: str, rows: list[str], props: str = "species:S:1:pos:R:3",
         extra: str = "") -> str:
    return (f"{len(rows)}\nProperties={props} {extra}Lattice=\"{lattice}\" pbc=\"T T T\"\n"
            + "\n".join(rows) + "\n")


CUBE = "5.43 0 0 0 5.43 0 0 0 5.43"
SI2 = ["Si 0 0 0", "Si 1.3575 1.3575 1.3575"]


def _binary_file(raw: Raw, tmp: Path) -> None:
    (tmp / "s.extxyz").write_bytes(bytes(range(256)) * 8)
    raw["structures"]["f"] = {"file": "s.extxyz"}


def _directory_as_file(raw: Raw, tmp: Path) -> None:
    (tmp / "adir").mkdir()
    raw["structures"]["f"] = {"file": "adir"}


def _foundation_lacks_element(raw: Raw, tmp: Path) -> None:
    pseudo = tmp / "pseudo"
    pseudo.mkdir()
    (pseudo / "Po.pbe-fake.UPF").write_text("<UPF version=\"2.0.1\"></UPF>\n")
    raw["structures"] = {"d": {"build": {"element": "Po", "crystal": "sc", "a_A": 3.35}}}
    raw["labeller"] = {"qe": {"pseudo_dir": str(pseudo)}}


def _distill(raw: Raw, _tmp: Path) -> None:
    raw["distill"] = {"groups": [{"structures": ["d"], "temperatures_K": [300]}],
                      "student": {"layers": 3}}


CASES: dict[str, Case] = {
    # --- the file itself
    "yaml_unclosed_bracket": Case(_text("structures: {d: [1, 2\n"), ("not valid YAML",)),
    "yaml_tab_indentation": Case(_text("structures:\n\td: 1\n"), ("not valid YAML",)),
    "yaml_top_level_list": Case(_text("- run_id: a\n"), ("top level must be a mapping",)),
    "yaml_empty_file": Case(_text(""), ("top level must be a mapping",)),
    "yaml_missing_required_section": Case(lambda raw, _t: raw.pop("init") and None,
                                          ("init: field required",)),
    # --- unknown keys, at every level
    "unknown_key_top_level": Case(_set("stagez", []), ("stagez", "unknown field")),
    "unknown_key_structure": Case(_set("structures.d.fiel", "x.cif"),
                                  ("structures.d.fiel", "unknown field")),
    "unknown_key_build": Case(_set("structures.d.build.lattice", "fcc"),
                              ("structures.d.build.lattice", "unknown field")),
    "unknown_key_perturb": Case(_set("init.perturb.atom_displacment_A", 0.1),
                                ("init.perturb.atom_displacment_A", "unknown field")),
    "unknown_key_labeller": Case(_set("labeller.engines", "qe"),
                                 ("labeller.engines", "unknown field")),
    "unknown_key_qe": Case(_set("labeller.qe.ecut", 30), ("labeller.qe.ecut", "unknown field")),
    "unknown_key_finetune": Case(_set("finetune.epoch", 3), ("finetune.epoch", "unknown")),
    "unknown_key_filters": Case(_set("filters.max_force", 3), ("filters.max_force", "unknown")),
    "unknown_key_stage": Case(_set("stages.0.iterations", 3), ("stages.0.iterations", "unknown")),
    "unknown_key_group_without_unit": Case(_set("stages.0.groups.0.temperature", 300),
                                           ("stages.0.groups.0.temperature", "unknown")),
    "unknown_key_select": Case(_set("stages.0.select.n", 3), ("stages.0.select.n", "unknown")),
    "unknown_key_converge": Case(_set("stages.0.converge.force_rmse", 0.1),
                                 ("stages.0.converge.force_rmse", "unknown")),
    "unknown_key_distill_student": Case(_distill, ("distill.student.layers", "unknown")),
    "unknown_key_cluster": Case(_set("cluster.workers", 4), ("cluster.workers", "unknown")),
    # --- wrong types and units
    "wrong_type_temperatures": Case(_set("stages.0.groups.0.temperatures_K", "hot"),
                                    ("stages.0.groups.0.temperatures_K",)),
    "wrong_type_steps": Case(_set("stages.0.groups.0.steps", "ten"),
                             ("stages.0.groups.0.steps", "integer")),
    "unit_in_value_timestep": Case(_set("stages.0.groups.0.timestep_fs", "1 ps"),
                                   ("stages.0.groups.0.timestep_fs", "number")),
    "unit_in_value_lattice": Case(_set("structures.d.build.a_A", "5.43 nm"),
                                  ("structures.d.build.a_A",)),
    "negative_temperature": Case(_set("stages.0.groups.0.temperatures_K", [-5]),
                                 ("stages.0.groups.0.temperatures_K.0", "greater than 0")),
    "unknown_crystal": Case(_set("structures.d.build.crystal", "diamondd"),
                            ("structures.d.build.crystal",)),
    # --- empty stages and groups
    "no_stages": Case(_set("stages", []), ("stages", "at least 1")),
    "stage_without_groups": Case(_set("stages.0.groups", []), ("stages.0.groups", "at least 1")),
    "init_without_structures": Case(_set("init.structures", []),
                                    ("init.structures", "at least 1")),
    "unknown_structure_reference": Case(_set("stages.0.groups.0.structures", ["nope"]),
                                        ("stages[0].groups[0].structures", "'nope'")),
    # --- structure files
    "structure_file_missing": Case(_set("structures.f", {"file": "missing.extxyz"}),
                                   ("structures.f.file: file not found", "missing.extxyz")),
    "structure_file_unreadable": Case(_binary_file, ("structures.f.file: cannot read",
                                                     "s.extxyz")),
    "structure_file_is_a_directory": Case(_directory_as_file, ("structures.f.file", "adir")),
    "structure_file_empty": Case(_file(""), ("structures.f.file", "s.extxyz")),
    "structure_not_periodic": Case(_file("2\nLattice=\"5 0 0 0 5 0 0 0 5\" pbc=\"T T F\"\n"
                                         "Si 0 0 0\nSi 1.3 1.3 1.3\n"),
                                   ("structures.f", "periodic")),
    "overlapping_atoms_in_file": Case(_file(_xyz(CUBE, ["Si 0 0 0", "Si 0.2 0.1 0"])),
                                      ("structures.f.file", "s.extxyz", "overlap"), True),
    "overlapping_atoms_from_build": Case(_set("structures.d.build.a_A", 1.5),
                                         ("structures.d.build", "overlap"), True),
    "nan_position_in_extxyz": Case(_file(_xyz(CUBE, ["Si 0 0 0", "Si nan 1.3575 1.3575"])),
                                   ("structures.f.file", "s.extxyz", "frame 0",
                                    "non-finite position"), True),
    "inf_cell_in_extxyz": Case(_file(_xyz("5.43 0 0 0 inf 0 0 0 5.43", SI2)),
                               ("structures.f.file", "s.extxyz", "non-finite"), True),
    "label_file_forces_wrong_shape": Case(
        _file(_xyz(CUBE, [r + " 0.1 0.2" for r in SI2], "species:S:1:pos:R:3:forces:R:2")),
        ("structures.f.file", "s.extxyz", "'forces' has shape (2, 2), expected (2, 3)"), True),
    "label_file_nan_energy": Case(_file(_xyz(CUBE, SI2, extra="energy=nan ")),
                                  ("structures.f.file", "s.extxyz", "'energy' is not finite"),
                                  True),
    # --- what the labeller and the foundation model can do
    "element_without_pseudopotential": Case(
        lambda raw, _t: raw.update(structures={"d": {"build": {
            "element": "Xe", "crystal": "fcc", "a_A": 6.2}}}, labeller={"qe": {}}),
        ("labeller.qe.pseudopotentials", "Xe")),
    "pseudopotential_file_missing": Case(
        _set("labeller.qe.pseudopotentials", {"Si": "Si.nope.UPF"}),
        ("labeller.qe.pseudopotentials", "Si.nope.UPF not found")),
    "element_outside_foundation_type_map": Case(
        _foundation_lacks_element, ("finetune.foundation", "'7net-0'", "['Po']"), True),
    # --- names that become store keys, and the store URL
    "run_id_escapes_prefix": Case(_set("run_id", "../escape"), ("run_id",)),
    "structure_name_with_slash": Case(
        lambda raw, _t: raw.update(structures={"a/../../b": raw["structures"]["d"]}),
        ("structures", "structure name 'a/../../b'")),
    "store_url_with_credentials": Case(_set("store", f"s3://AKIAEXAMPLE:{SECRET}@bucket/p"),
                                       ("store", "contains credentials"), True),
    "store_url_unknown_scheme": Case(_set("store", "ftp://host/x"),
                                     ("store", "unsupported store URL scheme 'ftp'"), True),
    "store_url_without_bucket": Case(_set("store", "s3://"), ("store", "names no bucket"), True),
    "store_url_file_not_absolute": Case(_set("store", "file://relative/dir"),
                                        ("store", "file:///absolute/path"), True),
    # --- values no run survives, caught before any work (found by a user, issue 13)
    "unknown_foundation_model": Case(_set("finetune.foundation", "7net-99"),
                                     ("finetune.foundation", "7net-99"), True),
    "foundation_checkpoint_file_missing": Case(
        _set("finetune.foundation", "models/missing.pth"),
        ("finetune.foundation", "missing.pth"), True),
    "md_timestep_unit_slip": Case(_set("stages.0.groups.0.timestep_fs", 1000.0),
                                  ("stages.0.groups.0.timestep_fs", "1000", "less than or equal"),
                                  True),
}


@pytest.fixture(scope="module")
def check() -> str:
    return check_command()


def _write(case: Case, tmp: Path) -> Path:
    raw = base()
    raw["workdir"] = str(tmp / "work")
    text = case.edit(raw, tmp)
    raw.setdefault("store", str(tmp / "store"))
    cfg = tmp / "pfd.yaml"
    cfg.write_text(text if text is not None else yaml.safe_dump(raw, sort_keys=False))
    return cfg


def _assert_refused(out: Any, case: Case, tmp: Path, cfg: Path) -> None:
    msg = out.stderr + out.stdout
    assert out.returncode != 0, msg
    assert "Traceback" not in msg, msg
    for s in case.says:
        assert s in msg, f"{s!r} not in:\n{msg}"
    if case.says[0] in ("not valid YAML", "top level must be a mapping"):
        assert str(cfg) in msg  # problems of the file itself name the file
    assert SECRET not in msg
    # nothing written: no store, no work directory, no default ./pfd-store
    assert not (tmp / "store").exists() and not (tmp / "work").exists()
    assert not (tmp / "pfd-store").exists() and not (tmp / "pfd-work").exists()


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_by_check(name: str, check: str, tmp_path: Path) -> None:
    case = CASES[name]
    cfg = _write(case, tmp_path)
    env = cli_env(tmp_path)
    out = pfd([check, str(cfg)], tmp_path, env, timeout=120)
    _assert_refused(out, case, tmp_path, cfg)
    shutil.rmtree(tmp_path / "prefect-home", ignore_errors=True)
    record(Fault(f"test_bad_input_is_refused_by_check[{name}]", f"bad input: {name}",
                 outcome=f"`pfd {check}` exit {out.returncode}"))


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.run_too])
def test_bad_input_is_refused_by_run(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    cfg = _write(case, tmp_path)
    out = pfd(["run", str(cfg)], tmp_path, cli_env(tmp_path), timeout=120)
    _assert_refused(out, case, tmp_path, cfg)
    record(Fault(f"test_bad_input_is_refused_by_run[{name}]", f"bad input: {name}",
                 outcome=f"`pfd run` exit {out.returncode}"))


def test_config_file_missing(check: str, tmp_path: Path) -> None:
    out = pfd([check, str(tmp_path / "nope.yaml")], tmp_path, cli_env(tmp_path), timeout=120)
    assert out.returncode != 0 and "config file not found" in out.stderr
    assert "nope.yaml" in out.stderr
    assert not (tmp_path / "pfd-store").exists()
    record(Fault("test_config_file_missing", "bad input: config file missing",
                 outcome=f"`pfd {check}` exit {out.returncode}"))


def test_run_store_option_with_credentials(tmp_path: Path) -> None:
    raw = base()
    raw["workdir"] = str(tmp_path / "work")
    (tmp_path / "pfd.yaml").write_text(yaml.safe_dump(raw))
    out = pfd(["run", str(tmp_path / "pfd.yaml"), "--store",
               f"s3://AKIAEXAMPLE:{SECRET}@bucket/p"], tmp_path, cli_env(tmp_path), timeout=120)
    assert out.returncode == 2 and "contains credentials" in out.stderr
    assert SECRET not in out.stdout + out.stderr
    assert not (tmp_path / "work").exists() and not (tmp_path / "pfd-store").exists()
    record(Fault("test_run_store_option_with_credentials", "bad input: --store with a secret",
                 outcome="`pfd run` exit 2, secret not echoed"))
