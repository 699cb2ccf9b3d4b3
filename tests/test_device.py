"""``cluster.device``: one setting, carried to every worker, honoured by the torch steps.

This machine has no GPU, so ``auto`` must mean the CPU, ``cuda`` must stop with one line
(at ``pfd check`` for a local cluster), and ``cpu`` must reach the workers' environment
(and DeePMD's own variable) and the SevenNet calculator and trainer.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from pfd.config import ClusterSpec, ConfigError, JobQueueSpec, parse_config
from pfd.device import DEVICE_VAR, DeviceError, device_env, requested, torch_device

ROOT = Path(__file__).resolve().parents[1]


def _raw(**cluster: object) -> dict:
    raw = yaml.safe_load((ROOT / "tests/data/tiny.yaml").read_text())
    raw["cluster"] = cluster
    return raw


def test_auto_is_the_cpu_here_and_cuda_says_why_it_cannot(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.delenv(DEVICE_VAR, raising=False)
    assert requested() == "auto" and torch_device() == "cpu" and torch_device("cpu") == "cpu"
    with pytest.raises(DeviceError, match="cluster.device: cuda.*sees no CUDA device"):
        torch_device("cuda")
    monkeypatch.setenv(DEVICE_VAR, "gpu")
    with pytest.raises(DeviceError, match="PFD_DEVICE='gpu'"):
        requested()


def test_config_names_the_field_and_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"cluster.device.*'auto', 'cpu' or 'cuda'"):
        parse_config(_raw(device="gpu"))
    cfg = parse_config(_raw(device="cpu"))
    # a machine setting: the same run on a GPU or a CPU keeps its run id
    assert cfg.fingerprint() == parse_config(_raw(device="cuda")).fingerprint()


def test_pfd_check_refuses_cuda_on_a_local_cluster_without_a_gpu() -> None:
    from pfd.preflight import check_config

    with pytest.raises(ConfigError, match="cluster.device: cuda"):
        check_config(_raw(device="cuda"), base=ROOT / "tests/data")
    check_config(_raw(device="cpu"), base=ROOT / "tests/data")


def test_batch_jobs_carry_the_setting() -> None:
    from pfd.jobqueue import build_jobqueue_cluster

    spec = JobQueueSpec(kind="slurm", cores=2, memory="2GB", walltime="00:30:00")
    script = build_jobqueue_cluster(spec, env=device_env("cpu")).job_script()
    assert f"export {DEVICE_VAR}=cpu" in script and "export DEVICE=cpu" in script


def test_local_workers_and_sevennet_follow_cpu() -> None:
    from tasks.cluster import dask_cluster

    def worker_env() -> tuple[str | None, str | None, str]:
        import os

        from pfd.models.sevennet import foundation_calculator

        calc = foundation_calculator()
        return os.environ.get(DEVICE_VAR), os.environ.get("DEVICE"), str(calc.device)

    with dask_cluster(ClusterSpec(n_workers=1, device="cpu")) as client:
        assert client.submit(worker_env).result(timeout=300) == ("cpu", "cpu", "cpu")
    assert DEVICE_VAR not in os.environ  # the block restored this process's environment
