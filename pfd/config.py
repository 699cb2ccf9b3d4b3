"""The run configuration: one strict YAML document validated before any work starts.

Every field carries its unit in its name, unknown keys are errors, and cross-field
checks (structure files exist, every element has a pseudopotential, stages name known
structures) run at load time so a typo never costs a DFT hour.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
PositiveInt = Annotated[int, Field(gt=0)]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ConfigError(ValueError):
    """A configuration problem, phrased as 'field.path: what is wrong (what is allowed)'."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- structures
class BuildSpec(Strict):
    """A crystal built with ase.build.bulk, so examples need no structure files."""

    element: str
    crystal: Literal["diamond", "fcc", "bcc", "hcp", "sc", "zincblende", "rocksalt"]
    a_A: PositiveFloat
    cubic: bool = True
    supercell: tuple[PositiveInt, PositiveInt, PositiveInt] = (1, 1, 1)
    vacancies: Annotated[int, Field(ge=0)] = 0


class StructureSpec(Strict):
    """Either a structure file (any format ASE reads; all frames are used) or a build recipe."""

    file: Path | None = None
    build: BuildSpec | None = None

    @model_validator(mode="after")
    def _one_source(self) -> StructureSpec:
        if (self.file is None) == (self.build is None):
            raise ValueError("give exactly one of 'file' or 'build'")
        return self


# --------------------------------------------------------------------------- perturbation
class PerturbSpec(Strict):
    n_per_structure: PositiveInt = 4
    atom_displacement_A: NonNegFloat = 0.1
    displacement_style: Literal["normal", "uniform", "const"] = "uniform"
    cell_strain: Annotated[float, Field(ge=0, lt=0.5)] = 0.03
    include_unperturbed: bool = True
    seed: int = 1


class InitSpec(Strict):
    structures: list[str] = Field(min_length=1)
    perturb: PerturbSpec = PerturbSpec()


# --------------------------------------------------------------------------- labelling
class QESpec(Strict):
    command: str = "pw.x"
    pseudo_dir: Path = Path("/usr/share/espresso/pseudo")
    pseudopotentials: dict[str, str] = Field(default_factory=dict)
    ecutwfc_Ry: PositiveFloat = 30.0
    ecutrho_Ry: PositiveFloat | None = None
    kspacing_invA: PositiveFloat = 0.4
    smearing: Literal["gaussian", "mv", "mp", "fd"] = "mv"
    degauss_Ry: PositiveFloat = 0.01
    conv_thr_Ry: PositiveFloat = 1e-8
    mixing_beta: Annotated[float, Field(gt=0, le=1)] = 0.5
    electron_maxstep: PositiveInt = 100
    threads: PositiveInt = 1
    timeout_s: PositiveFloat = 3600.0


class LabellerSpec(Strict):
    engine: Literal["qe"] = "qe"
    qe: QESpec = QESpec()


# --------------------------------------------------------------------------- models
class FinetuneSpec(Strict):
    backend: Literal["sevennet"] = "sevennet"
    foundation: str = "7net-0"
    epochs: PositiveInt = 20
    batch_size: PositiveInt = 4
    learning_rate: PositiveFloat = 1e-3
    patience_epochs: PositiveInt = 5
    valid_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.1
    seed: int = 1


class StudentSpec(Strict):
    backend: Literal["deepmd"] = "deepmd"
    descriptor: Literal["se_e2_a", "se_atten_v2"] = "se_e2_a"
    rcut_A: PositiveFloat = 5.0
    rcut_smth_A: NonNegFloat = 0.5
    descriptor_neuron: list[PositiveInt] = Field(default_factory=lambda: [16, 32, 64])
    fitting_neuron: list[PositiveInt] = Field(default_factory=lambda: [120, 120, 120])
    steps: PositiveInt = 20000
    start_lr: PositiveFloat = 1e-3
    stop_lr: PositiveFloat = 3.5e-8
    seed: int = 1

    @model_validator(mode="after")
    def _smooth_below_cut(self) -> StudentSpec:
        if self.rcut_smth_A >= self.rcut_A:
            raise ValueError("rcut_smth_A must be smaller than rcut_A")
        return self


# --------------------------------------------------------------------------- exploration
class MDGroup(Strict):
    """structures × temperatures × pressures: each combination is one trajectory."""

    structures: list[str] = Field(min_length=1)
    temperatures_K: list[PositiveFloat] = Field(min_length=1)
    pressures_GPa: list[float] | None = None
    ensemble: Literal["nvt", "npt"] = "nvt"
    steps: PositiveInt = 200
    timestep_fs: PositiveFloat = 1.0
    sample_every: PositiveInt = 10
    friction_per_fs: PositiveFloat = 0.01
    seed: int = 1

    @model_validator(mode="after")
    def _pressures_need_npt(self) -> MDGroup:
        if self.ensemble == "npt" and not self.pressures_GPa:
            raise ValueError("ensemble 'npt' needs pressures_GPa (a non-empty list)")
        if self.ensemble == "nvt" and self.pressures_GPa:
            raise ValueError("pressures_GPa given but ensemble is 'nvt' (use 'npt')")
        if self.sample_every > self.steps:
            raise ValueError("sample_every must not exceed steps")
        return self


class FilterSpec(Strict):
    min_distance_scale: Annotated[float, Field(gt=0, le=1.5)] = 0.6
    max_force_eV_A: PositiveFloat = 20.0
    max_cell_length_ratio: Annotated[float, Field(gt=1)] = 5.0
    max_skew_deg: Annotated[float, Field(gt=0, lt=60)] = 20.0  # from nearest of 60/90/120°


class SelectSpec(Strict):
    method: Literal["entropy", "random"] = "entropy"
    n_frames: PositiveInt = 10
    cutoff_A: PositiveFloat = 5.0
    k_neighbours: PositiveInt = 32
    seed: int = 1


class ConvergeSpec(Strict):
    """Criteria combine with AND; at least one must be set."""

    force_rmse_eV_A: PositiveFloat | None = 0.06
    energy_rmse_meV_atom: PositiveFloat | None = None

    @model_validator(mode="after")
    def _some_criterion(self) -> ConvergeSpec:
        if self.force_rmse_eV_A is None and self.energy_rmse_meV_atom is None:
            raise ValueError("set at least one of force_rmse_eV_A, energy_rmse_meV_atom")
        return self


class StageSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,40}$")
    groups: list[MDGroup] = Field(min_length=1)
    select: SelectSpec = SelectSpec()
    converge: ConvergeSpec = ConvergeSpec()
    max_iterations: PositiveInt = 3


class DistillSpec(Strict):
    enabled: bool = True
    groups: list[MDGroup] = Field(min_length=1)
    max_frames: PositiveInt = 2000
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1
    student: StudentSpec = StudentSpec()


class ClusterSpec(Strict):
    n_workers: PositiveInt = 2
    threads_per_worker: PositiveInt = 1
    address: str | None = None


# --------------------------------------------------------------------------- the run
class PFDConfig(Strict):
    run_id: str | None = None
    store: str = "./pfd-store"
    workdir: Path = Path("./pfd-work")
    structures: dict[str, StructureSpec] = Field(min_length=1)
    init: InitSpec
    labeller: LabellerSpec = LabellerSpec()
    finetune: FinetuneSpec = FinetuneSpec()
    filters: FilterSpec = FilterSpec()
    stages: list[StageSpec] = Field(min_length=1)
    max_total_iterations: PositiveInt = 20
    distill: DistillSpec | None = None
    cluster: ClusterSpec = ClusterSpec()

    @field_validator("run_id")
    @classmethod
    def _run_id_ok(cls, v: str | None) -> str | None:
        if v is not None and not _RUN_ID.match(v):
            raise ValueError("run_id: letters, digits, '.', '_', '-' (max 64), starting alnum")
        return v

    @model_validator(mode="after")
    def _references_resolve(self) -> PFDConfig:
        known = set(self.structures)
        refs: list[tuple[str, str]] = [(f"init.structures[{i}]", s)
                                       for i, s in enumerate(self.init.structures)]
        for k, st in enumerate(self.stages):
            for g, grp in enumerate(st.groups):
                refs += [(f"stages[{k}].groups[{g}].structures", s) for s in grp.structures]
        if self.distill is not None:
            for g, grp in enumerate(self.distill.groups):
                refs += [(f"distill.groups[{g}].structures", s) for s in grp.structures]
        for where, name in refs:
            if name not in known:
                raise ValueError(f"{where}: unknown structure {name!r} (defined: {sorted(known)})")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stages: names must be unique, got {names}")
        return self

    def fingerprint(self) -> str:
        """Stable hash of the physics-relevant config: the default run id."""
        blob = json.dumps(self.model_dump(mode="json", exclude={"run_id"}), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def resolved_run_id(self) -> str:
        return self.run_id or f"run-{self.fingerprint()}"


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration {source}:"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check spelling; see examples/si/pfd.yaml for allowed fields)"
        elif e["type"] == "literal_error":
            msg = f"{msg}"
        lines.append(f"  {path}: {msg} (got {e.get('input')!r})"
                     if e["type"] != "missing" else f"  {path}: field required")
    return "\n".join(lines)


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative file paths in a config are relative to the config file, not the CWD."""
    for spec in (raw.get("structures") or {}).values():
        if isinstance(spec, dict) and spec.get("file"):
            p = Path(spec["file"])
            if not p.is_absolute():
                spec["file"] = str((base / p).resolve())
    return raw


def parse_config(raw: dict[str, Any], source: str = "<inline>",
                 base: Path | None = None) -> PFDConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid configuration {source}: top level must be a mapping")
    if base is not None:
        raw = _resolve_paths(raw, base)
    try:
        cfg = PFDConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None
    check_environment(cfg)
    return cfg


def load_config(path: str | Path) -> PFDConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    return parse_config(raw, source=str(p), base=p.parent.resolve())


def check_environment(cfg: PFDConfig) -> None:
    """Checks that need the filesystem: structure files exist and every element is labellable."""
    from pfd.structures import load_structures

    structures = load_structures(cfg)
    elements = sorted({el for frames in structures.values() for a in frames
                       for el in a.get_chemical_symbols()})
    if cfg.labeller.engine == "qe":
        from pfd.label.qe import resolve_pseudopotentials

        try:
            resolve_pseudopotentials(elements, cfg.labeller.qe)
        except (FileNotFoundError, KeyError) as err:
            raise ConfigError(f"labeller.qe.pseudopotentials: {err}") from None
