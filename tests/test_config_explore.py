"""Config checks for exploration groups, perturbation, convergence and the Dask cluster:
each mistake is refused at load time, naming the field path and what is allowed."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from configs import base

from pfd.config import (
    ENSEMBLE_ALIASES,
    NPT_ENSEMBLES,
    ConfigError,
    MDGroup,
    parse_config,
)
from pfd.explore import integrators
from pfd.preflight import check_config


def _group(**kw: Any) -> dict[str, Any]:
    raw = base()
    raw["stages"][0]["groups"][0].update(kw)
    return raw


def _error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        check_config(raw)
    return str(e.value)


G = "stages.0.groups.0"


def test_config_ensembles_match_the_runner() -> None:
    names = set(get_args(MDGroup.model_fields["ensemble"].annotation)) - set(ENSEMBLE_ALIASES)
    assert names == set(integrators.ENSEMBLES)
    assert set(NPT_ENSEMBLES) == set(integrators.NPT_ENSEMBLES)


@pytest.mark.parametrize("kw, field, says", [
    ({"temperatures_K": [300, -5]}, f"{G}.temperatures_K.1", "greater than 0"),
    ({"temperatures_K": []}, f"{G}.temperatures_K", "at least 1"),
    ({"steps": 40, "sample_every": 50}, G, "sample_every (50) must not exceed steps (40)"),
    ({"ensemble": "nve"}, f"{G}.ensemble", "'nvt-nhc'"),
    ({"ensemble": "npt"}, G, "ensemble 'npt' needs pressures_GPa"),
    ({"ensemble": "npt-aniso", "pressures_GPa": []}, G, "needs pressures_GPa"),
    ({"pressures_GPa": [1.0]}, G, "pressures_GPa given but ensemble is 'nvt'"),
    ({"ensemble": "nvt-nhc", "friction_per_fs": 0.02}, G, "friction_per_fs is the Langevin"),
    ({"thermostat_damping_fs": 50}, G, "Langevin 'nvt' uses friction_per_fs"),
    ({"ensemble": "nvt-nhc", "barostat_damping_fs": 500}, G, "has no barostat"),
    ({"timestep_fs": 0}, f"{G}.timestep_fs", "greater than 0"),
    ({"samples_per_part": 0}, f"{G}.samples_per_part", "greater than 0"),
])
def test_bad_group_rejected_with_field_path(kw: dict[str, Any], field: str, says: str) -> None:
    msg = _error(_group(**kw))
    line = next((ln for ln in msg.splitlines() if ln.strip().startswith(field + ":")), None)
    assert line is not None, msg
    assert says in line, msg


def test_distill_groups_are_checked_too() -> None:
    raw = base()
    raw["distill"] = {"groups": [{"structures": ["d"], "temperatures_K": [300], "steps": 5}]}
    assert "distill.groups.0: Value error, sample_every (10) must not exceed" in _error(raw)


def test_aliases_and_damping_accepted() -> None:
    cfg = check_config(_group(ensemble="npt-iso", pressures_GPa=[0, 1.0],
                              thermostat_damping_fs=50, barostat_damping_fs=500))
    g = cfg.stages[0].groups[0]
    assert (g.ensemble, g.thermostat_damping_fs, g.barostat_damping_fs) == ("npt", 50, 500)
    assert check_config(_group(ensemble="nvt-langevin")).stages[0].groups[0].ensemble == "nvt"
    assert check_config(_group()).fingerprint() == check_config(
        _group(ensemble="nvt-langevin")).fingerprint()  # an alias is the same physics


@pytest.mark.parametrize("perturb, field", [
    ({"atom_fraction": 0}, "init.perturb.atom_fraction"),
    ({"atom_fraction": 1.5}, "init.perturb.atom_fraction"),
    ({"supercell": [2, 0, 1]}, "init.perturb.supercell.1"),
    ({"supercell": [2, 2]}, "init.perturb.supercell.2"),
])
def test_bad_perturb_rejected(perturb: dict[str, Any], field: str) -> None:
    raw = base()
    raw["init"]["perturb"] = perturb
    assert f"  {field}:" in _error(raw)


def test_convergence_rules() -> None:
    raw = base()
    raw["stages"][0]["converge"] = {"force_rmse_eV_A": None, "frame_ratio": {}}
    rule = check_config(raw).stages[0].converge.frame_ratio
    assert rule is not None  # the paper's defaults
    assert (rule.min_fraction, rule.max_energy_error_meV_atom,
            rule.max_force_rmse_eV_A) == (0.8, 1.0, 0.05)
    raw["stages"][0]["converge"] = {"force_rmse_eV_A": None}
    assert "stages.0.converge: Value error, set at least one of" in _error(raw)
    raw["stages"][0]["converge"] = {"frame_ratio": {"min_fraction": 1.2}}
    assert "stages.0.converge.frame_ratio.min_fraction:" in _error(raw)
    raw["stages"][0]["converge"] = {"frame_ratio": {"max_energy_error_meV_atom": None,
                                                    "max_force_rmse_eV_A": None}}
    assert "stages.0.converge.frame_ratio: Value error, set at least one" in _error(raw)


def _cluster(cluster: dict[str, Any]) -> dict[str, Any]:
    raw = base()
    raw["cluster"] = cluster
    return raw


JQ = {"kind": "slurm", "cores": 8, "memory": "16GB"}


@pytest.mark.parametrize("cluster, field, says", [
    ({"address": "tcp://h:8786", "jobqueue": JQ}, "cluster", "either address"),
    ({"jobqueue": {**JQ, "kind": "sge"}}, "cluster.jobqueue.kind", "'slurm' or 'pbs'"),
    ({"jobqueue": {**JQ, "memory": "lots"}}, "cluster.jobqueue.memory", "not a size"),
    ({"jobqueue": {**JQ, "walltime": "2h"}}, "cluster.jobqueue", "walltime '2h'"),
    ({"jobqueue": {**JQ, "kind": "pbs", "walltime": "1-00:00:00"}}, "cluster.jobqueue",
     "HH:MM:SS for pbs"),
    ({"jobqueue": {**JQ, "processes": 3}}, "cluster.jobqueue", "must divide cores (8)"),
    ({"jobqueue": {"kind": "slurm", "memory": "4GB"}}, "cluster.jobqueue.cores",
     "field required"),
])
def test_bad_cluster_rejected(cluster: dict[str, Any], field: str, says: str) -> None:
    msg = _error(_cluster(cluster))
    line = next((ln for ln in msg.splitlines() if ln.strip().startswith(field + ":")), None)
    assert line is not None and says in line, msg


def test_dumped_config_validates_again() -> None:
    """Stored config.json and Prefect parameters are dumps: they must load unchanged."""
    from pfd.config import PFDConfig

    raw = _group(ensemble="npt-aniso", pressures_GPa=[0.0, 1.0], barostat_damping_fs=400)
    raw["stages"][0]["groups"].append({"structures": ["d"], "temperatures_K": [900],
                                       "ensemble": "nvt-nhc", "thermostat_damping_fs": 80})
    raw["stages"][0]["converge"] = {"frame_ratio": {"min_fraction": 0.9}}
    raw["init"]["perturb"] = {"atom_fraction": 0.5, "supercell": [2, 2, 1]}
    raw["cluster"] = {"jobqueue": {**JQ, "job_extra_directives": ["--exclusive"]}}
    cfg = parse_config(raw)  # the schema only: whether SLURM takes the job is test_slurm's
    again = PFDConfig.model_validate(cfg.model_dump(mode="json"))
    assert again == cfg and again.fingerprint() == cfg.fingerprint()


def test_jobqueue_accepted() -> None:
    cfg = parse_config(_cluster({"jobqueue": {**JQ, "walltime": "1-02:00:00", "n_jobs": 3}}))
    jq = cfg.cluster.jobqueue
    assert jq is not None and (jq.n_jobs, jq.walltime, jq.processes) == (3, "1-02:00:00", None)
