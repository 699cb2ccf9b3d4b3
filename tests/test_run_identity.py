"""A run's identity is its physics: where and how it runs never starts a new run.

The default run id hashes ``PFDConfig.identity()``. Moving the project folder, changing
workers, engine threads, MPI ranks, timeouts, the store or the validation must keep it
(every store key, and so every trained model, is under ``runs/<id>/``); changing what is
computed must change it.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from ase.build import bulk
from ase.io import write
from configs import base
from pydantic import BaseModel

from pfd.config import MACHINE, PFDConfig, load_config, parse_config


def _machine_fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Dotted paths of every field marked machine-only, walking nested settings blocks."""
    out: set[str] = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        if field.json_schema_extra == MACHINE:
            out.add(path)
            continue
        ann = field.annotation
        for typ in getattr(ann, "__args__", (ann,)):
            if isinstance(typ, type) and issubclass(typ, BaseModel):
                out |= _machine_fields(typ, f"{path}.")
    return out


def test_the_machine_only_fields_are_exactly_these() -> None:
    # adding a machine-only field is a decision about run identity: list it here too
    assert _machine_fields(PFDConfig) == {
        "run_id", "store", "workdir", "validation", "cluster",
        *(f"labeller.{e}.{f}" for e in ("qe", "cp2k", "vasp")
          for f in ("threads", "mpi_ranks", "mpirun", "timeout_s", "max_corrections",
                    "command")),
        "labeller.qe.pseudo_dir", "labeller.qe.scf_fix_attempts", "labeller.qe.crash_retries",
        "labeller.cp2k.data_dir", "labeller.vasp.psp_dir",
        "labeller.max_failure_fraction", "labeller.keep_scratch",
    }


MACHINE_CHANGES: list[tuple[str, dict[str, Any]]] = [
    ("store", {"store": "s3://elsewhere/prefix"}),
    ("workdir", {"workdir": "/tmp/other-scratch"}),
    ("cluster.n_workers", {"cluster": {"n_workers": 7, "threads_per_worker": 2}}),
    ("cluster.address", {"cluster": {"address": "tcp://10.0.0.1:8786"}}),
    ("qe.threads", {"labeller": {"qe": {"threads": 4}}}),
    ("qe.mpi_ranks", {"labeller": {"qe": {"mpi_ranks": 8, "mpirun": "srun -n {ranks}"}}}),
    ("qe.timeout_s", {"labeller": {"qe": {"timeout_s": 60.0, "max_corrections": 1}}}),
    ("qe.command", {"labeller": {"qe": {"command": "/opt/qe/bin/pw.x"}}}),
    ("qe.pseudo_dir", {"labeller": {"qe": {"pseudo_dir": "/opt/pseudo"}}}),
    ("qe.retries", {"labeller": {"qe": {"scf_fix_attempts": 0, "crash_retries": 5}}}),
    ("failure limit", {"labeller": {"max_failure_fraction": 0.5, "keep_scratch": True}}),
    ("cp2k block unused", {"labeller": {"cp2k": {"cutoff_Ry": 600.0}}}),
    ("validation", {"validation": {"enabled": False}}),
]

PHYSICS_CHANGES: list[tuple[str, dict[str, Any]]] = [
    ("ecutwfc", {"labeller": {"qe": {"ecutwfc_Ry": 40.0}}}),
    ("engine", {"labeller": {"engine": "cp2k"}}),
    ("temperature", {"stages": [{"name": "s1", "groups": [
        {"structures": ["d"], "temperatures_K": [600]}]}]}),
    ("finetune", {"finetune": {"epochs": 3}}),
    ("structure", {"structures": {"d": {"build": {"element": "Si", "crystal": "diamond",
                                                  "a_A": 5.40}}}}),
]


def _merge(raw: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    for k, v in change.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


@pytest.mark.parametrize("what,change", MACHINE_CHANGES, ids=[c[0] for c in MACHINE_CHANGES])
def test_machine_settings_keep_the_run_id(what: str, change: dict[str, Any]) -> None:
    raw = base()
    assert parse_config(_merge(raw, change)).resolved_run_id == \
        parse_config(raw).resolved_run_id, what


@pytest.mark.parametrize("what,change", PHYSICS_CHANGES, ids=[c[0] for c in PHYSICS_CHANGES])
def test_physics_changes_the_run_id(what: str, change: dict[str, Any]) -> None:
    raw = base()
    assert parse_config(_merge(raw, change)).resolved_run_id != \
        parse_config(raw).resolved_run_id, what


def _project(root: Path, a_A: float = 5.43) -> Path:
    root.mkdir(parents=True)
    write(root / "si.extxyz", bulk("Si", "diamond", a=a_A, cubic=True))
    raw = base()
    raw["structures"] = {"d": {"file": "si.extxyz"}}
    (root / "pfd.yaml").write_text(yaml.safe_dump(raw))
    return root / "pfd.yaml"


def test_moving_the_project_keeps_the_run_id_and_content_changes_it(tmp_path: Path) -> None:
    here = load_config(_project(tmp_path / "a")).resolved_run_id
    shutil.copytree(tmp_path / "a", tmp_path / "moved" / "elsewhere")
    assert load_config(tmp_path / "moved" / "elsewhere" / "pfd.yaml").resolved_run_id == here
    # the same file name with other atoms in it is another run
    assert load_config(_project(tmp_path / "b", a_A=5.50)).resolved_run_id != here


def test_a_stored_config_reparses_without_the_original_files(tmp_path: Path) -> None:
    """``config.json`` as the flow stores it (run id resolved) re-reads on a machine that
    has neither the structure file nor the pseudopotential directory."""
    from pfd.preflight import check_config_file

    cfg = check_config_file(_project(tmp_path / "p"))
    stored = cfg.model_dump(mode="json")
    stored["labeller"]["qe"]["pseudo_dir"] = str(tmp_path / "no-such-pseudo-dir")
    shutil.rmtree(tmp_path / "p")
    again = parse_config(stored, source="runs/x/config.json")
    assert again.resolved_run_id == cfg.resolved_run_id
    assert again.structures["d"].file == cfg.structures["d"].file
