"""dask-jobqueue clusters from config: the batch script asks for what the config says.

No batch system is needed: the cluster is built unscaled, so no job is submitted, and
its ``job_script()`` is what ``sbatch``/``qsub`` would receive.
"""

from __future__ import annotations

import sys

import pytest

from pfd.config import JobQueueSpec
from pfd.jobqueue import build_jobqueue_cluster


@pytest.fixture
def built():  # noqa: ANN201
    clusters = []

    def build(**kw: object):  # noqa: ANN202
        c = build_jobqueue_cluster(JobQueueSpec(**kw))  # type: ignore[arg-type]
        clusters.append(c)
        return c

    yield build
    for c in clusters:
        c.close()


def test_slurm_script_has_requested_resources(built) -> None:  # noqa: ANN001
    c = built(kind="slurm", cores=8, memory="16GiB", processes=4, walltime="1-02:00:00",
              queue="short", account="proj42", n_jobs=3,
              job_extra_directives=["--exclusive", "--constraint=cpu"],
              job_script_prologue=["module load qe/7.2"], log_directory="/tmp/pfd-logs")
    script = c.job_script()
    lines = script.splitlines()
    for want in ("#SBATCH -J pfd-worker", "#SBATCH -p short", "#SBATCH -A proj42",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=16G", "#SBATCH -t 1-02:00:00",
                 "#SBATCH --exclusive", "#SBATCH --constraint=cpu",
                 "#SBATCH -e /tmp/pfd-logs/pfd-worker-%J.err",
                 "export OMP_NUM_THREADS=1", "module load qe/7.2"):
        assert want in lines, (want, script)
    worker = lines[-1]
    assert worker.startswith(f"{sys.executable} -m distributed.cli.dask_worker tcp://")
    assert "--nworkers 4" in worker and "--nthreads 1" in worker  # one task per worker
    # the prologue (thread pinning, then the user's) runs before the worker starts
    assert lines.index("export OMP_NUM_THREADS=1") < lines.index("module load qe/7.2") < len(
        lines) - 1
    assert len(c.workers) == 0  # nothing submitted


def test_pbs_script_defaults_to_single_threaded_workers(built) -> None:  # noqa: ANN001
    c = built(kind="pbs", cores=4, memory="8GB", walltime="00:30:00", queue="debug",
              job_extra_directives=["-l place=excl"], python="/opt/venv/bin/python")
    script = c.job_script()
    lines = script.splitlines()
    for want in ("#PBS -N pfd-worker", "#PBS -q debug", "#PBS -l walltime=00:30:00",
                 "#PBS -l place=excl"):
        assert want in lines, (want, script)
    assert any(ln.startswith("#PBS -l select=1:ncpus=4:mem=") for ln in lines), script
    assert lines[-1].startswith("/opt/venv/bin/python -m distributed.cli.dask_worker")
    assert "--nworkers 4" in lines[-1] and "--nthreads 1" in lines[-1]


def test_no_submit_command_here_names_the_kind(monkeypatch) -> None:  # noqa: ANN001
    import pfd.jobqueue as jq
    from pfd.config import ConfigError

    monkeypatch.setattr(jq.shutil, "which", lambda cmd: None)
    for kind, cmd in (("slurm", "sbatch"), ("pbs", "qsub")):
        spec = JobQueueSpec(kind=kind, cores=2, memory="2GB")  # type: ignore[arg-type]
        with pytest.raises(ConfigError) as err:
            jq.check_submittable(spec, where="cluster.dft_jobqueue")
        assert str(err.value).startswith(
            f"cluster.dft_jobqueue.kind: {kind!r} needs {cmd!r}, which is not on"), err.value


def test_worker_retires_before_its_walltime() -> None:
    from pfd.jobqueue import walltime_s, worker_lifetime_s

    assert walltime_s("1-02:03:04") == 93784 and walltime_s("00:01:00") == 60
    assert worker_lifetime_s("01:00:00") == 3300  # 5 minutes before the hour
    assert worker_lifetime_s("00:01:00") == 48   # a fifth before a short walltime


def test_dft_ranks_must_fit_the_dft_worker() -> None:
    from configs import base

    from pfd.config import ConfigError, parse_config

    raw = base()
    raw["labeller"]["qe"].update(mpi_ranks=4, threads=1)
    raw["cluster"] = {"dft_jobqueue": {"kind": "slurm", "cores": 4, "processes": 2,
                                       "memory": "8GB"}}
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert "labeller.qe: mpi_ranks (4) × threads (1) needs more cores than one DFT worker" \
        in str(err.value) and "cluster.dft_jobqueue: cores 4 / processes 2 = 2" in str(err.value)
    raw["cluster"]["dft_jobqueue"]["processes"] = 1
    assert parse_config(raw).cluster.dft_jobqueue.cores == 4  # type: ignore[union-attr]


def test_dft_worker_books_its_cores_but_runs_one_task(built) -> None:  # noqa: ANN001
    """A DFT worker (cores 4, processes 1): the job books 4 CPUs for the engine's ranks, the
    Dask worker runs one frame at a time (two at once would put 8 ranks on 4 cores)."""
    slurm = built(kind="slurm", cores=4, memory="8GB", processes=1).job_script().splitlines()
    assert "#SBATCH --cpus-per-task=4" in slurm and "--nthreads 1" in slurm[-1], slurm
    pbs = built(kind="pbs", cores=4, memory="8GB", processes=1).job_script().splitlines()
    assert "#PBS -l select=1:ncpus=4:mem=7630MB" in pbs and "--nthreads 1" in pbs[-1], pbs


def test_hpc_example_config_is_valid(tmp_path) -> None:  # noqa: ANN001
    """deployments/slurm/pfd.yaml (docs/hpc.md) parses, and its two job kinds render."""
    from pathlib import Path

    from pfd.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "deployments/slurm/pfd.yaml")
    here = {"log_directory": str(tmp_path)}  # building a cluster creates its log directory
    gpu = cfg.cluster.jobqueue.model_copy(update=here)  # type: ignore[union-attr]
    dft = cfg.cluster.dft_jobqueue.model_copy(update=here)  # type: ignore[union-attr]
    assert "--gres=gpu:1" in build_jobqueue_cluster(gpu).job_script()
    script = build_jobqueue_cluster(dft).job_script().splitlines()
    assert "#SBATCH -p compute" in script and "#SBATCH --cpus-per-task=32" in script
    assert cfg.labeller.qe.mpi_ranks == 32
