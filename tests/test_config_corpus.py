"""Every constrained field of the schema refuses a bad value through ``pfd check``.

The corpus is generated from ``pfd.config`` itself: each field that carries a bound
(gt/ge/lt/le), a set of allowed values (Literal), a length or a pattern gets one value
just outside what it allows, placed into a config that has every optional block, so a
field added later is covered without anyone writing its case. ``pfd check`` must exit 2
with a message that names the field's path and the value, and no traceback. The
hand-written cases (files, engines, names, YAML) are in tests/reliability/test_bad_inputs.py.
"""

from __future__ import annotations

import copy
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types as at
import pytest
import yaml
from configs import base
from pydantic import BaseModel
from typer.testing import CliRunner

from pfd.cli import app
from pfd.config import PFDConfig


def _full_base() -> dict[str, Any]:
    """The base config with every optional block present, so each field has a place."""
    raw = base()
    group = {"structures": ["d"], "temperatures_K": [300]}
    raw["distill"] = {"groups": [group], "student": {}}
    raw["stages"][0].update(select={}, converge={"frame_ratio": {}})
    raw["cluster"] = {"jobqueue": {"kind": "slurm", "cores": 2, "memory": "4GB"}}
    raw["validation"] = {}
    return raw


def _models(ann: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, list, dict)."""
    out: list[type[BaseModel]] = []
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    for arg in typing.get_args(ann):
        out += _models(arg)
    return out


def _bad_values(field: Any) -> list[tuple[Any, str]]:
    """(value just outside the constraint, what the constraint is) for one field."""
    out: list[tuple[Any, str]] = []
    ann = field.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)] or [ann]
    is_int = all(a is int for a in args if not typing.get_origin(a))
    for m in field.metadata:
        if isinstance(m, at.Gt):
            out.append((m.gt, f"gt {m.gt}"))
        elif isinstance(m, at.Ge):
            out.append((m.ge - 1 if is_int else m.ge - 0.5, f"ge {m.ge}"))
        elif isinstance(m, at.Lt):
            out.append((m.lt, f"lt {m.lt}"))
        elif isinstance(m, at.Le):
            out.append((m.le + 1 if is_int else m.le * 2 + 1, f"le {m.le}"))
        elif isinstance(m, at.MinLen) and m.min_length > 0:
            out.append(([], f"min_length {m.min_length}"))
        elif getattr(m, "pattern", None):
            out.append(("bad name/with slash", "pattern"))
    for a in args:
        if typing.get_origin(a) is Literal:
            out.append(("not-one-of-these", "literal"))
            break
    return out


def _cases() -> list[tuple[str, Any, str]]:
    """(dotted path into the full base config, bad value, constraint) for every field."""
    raw = _full_base()
    cases: list[tuple[str, Any, str]] = []

    def walk(model: type[BaseModel], node: Any, path: str) -> None:
        for name, field in model.model_fields.items():
            here = f"{path}{name}"
            for value, what in _bad_values(field):
                cases.append((here, value, what))
            child = node.get(name) if isinstance(node, dict) else None
            for sub in _models(field.annotation):
                origin = typing.get_origin(field.annotation)
                if isinstance(child, list) and child:
                    walk(sub, child[0], f"{here}.0.")
                elif isinstance(child, dict) and origin is dict or (
                        isinstance(child, dict) and name == "structures"):
                    key = next(iter(child))
                    walk(sub, child[key], f"{here}.{key}.")
                elif isinstance(child, dict):
                    walk(sub, child, f"{here}.")
                elif child is None and not _is_optional(field.annotation):
                    walk(sub, {}, f"{here}.")
    walk(PFDConfig, raw, "")
    unique = {(p, w): (p, v, w) for p, v, w in cases}
    return [unique[k] for k in sorted(unique)]


def _is_optional(ann: Any) -> bool:
    return type(None) in typing.get_args(ann) or isinstance(ann, types.UnionType) and \
        type(None) in ann.__args__


def _put(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    *head, last = path.split(".")
    node: Any = raw
    for p in head:
        node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
    node[int(last) if last.isdigit() else last] = value
    return raw


CASES = _cases()


def test_the_corpus_covers_the_schema() -> None:
    paths = {c[0] for c in CASES}
    # a sample of fields from every block; a schema walk that lost a block fails here
    for must in ("stages.0.groups.0.timestep_fs", "labeller.qe.ecutwfc_Ry",
                 "labeller.cp2k.mixing_alpha", "labeller.vasp.ismear",
                 "distill.student.rcut_A", "distill.groups.0.steps",
                 "stages.0.converge.frame_ratio.min_fraction", "stages.0.select.k_neighbours",
                 "cluster.jobqueue.cores", "validation.diffusion.steps",
                 "validation.stability.temperature_factor",
                 "init.perturb.cell_strain", "finetune.valid_fraction",
                 "structures.d.build.a_A", "filters.max_skew_deg", "stages.0.name"):
        assert must in paths, must
    assert len(CASES) > 100


@pytest.mark.parametrize("path,value,what", CASES, ids=[f"{c[0]}[{c[2]}]" for c in CASES])
def test_constrained_field_is_refused(path: str, value: Any, what: str,
                                      tmp_path: Path) -> None:
    raw = _put(_full_base(), path, value)
    raw["store"] = str(tmp_path / "store")
    cfg = tmp_path / "pfd.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    res = CliRunner().invoke(app, ["check", str(cfg)])
    out = res.output
    assert res.exit_code == 2, f"{path}={value!r} ({what}) was not refused: {out}"
    assert res.exception is None or isinstance(res.exception, SystemExit), out
    assert "Traceback" not in out
    # names the field (pydantic's dotted location) and the value given
    loc = re.escape(path)
    assert re.search(rf"\b{loc}\b", out), out
    assert repr(value) in out or str(value) in out, out
    assert not (tmp_path / "store").exists()
