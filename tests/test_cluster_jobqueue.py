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
    assert "--nworkers 4" in worker and "--nthreads 2" in worker
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
