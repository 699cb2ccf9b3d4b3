"""Fixtures shared by test files: S3 servers, a SLURM cluster, credentials that cannot be real."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from s3server import SECRET, SWIFT_SCRIPT, SYSTEM_PYTHON, SwiftServer, free_port, swift_available

#: tests/requires.py (needs, missing): a missing test dependency skips, or fails when $CI is set
pytest_plugins = ["requires"]


#: directories whose files run in one xdist process: their conftest builds an expensive
#: session fixture (tests/reliability: one reference pfd run) that each process would
#: build again
SHARED_PROCESS_DIRS = ("tests/reliability/",)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile`` (``make test``) with :data:`SHARED_PROCESS_DIRS` as one unit.

    A file runs in one process, so its module fixtures (a whole run) are built once.
    (xdist's own ``loadgroup`` cannot express this here: with pytest 9.2 its group marks
    are silently ignored, since ``item._nodeid`` no longer sets the node id.)
    """
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return next((d for d in SHARED_PROCESS_DIRS if path.startswith(d)), path)

    return FileScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with slow tests first, each file's tests kept together and in order.

    xdist hands out files (:func:`pytest_xdist_make_scheduler`) in this order: long files
    first and the many quick ones last fill the processes evenly; a whole-run file handed
    out last would run alone at the end.
    """
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: order kept within


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials only; never let a developer's real AWS config reach the tests."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "PFD_S3_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def swift_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwiftServer]:
    """OpenStack Swift with s3api from Debian packages (scripts/install-system-deps.sh)."""
    if not swift_available():
        msg = ("OpenStack Swift (Debian swift-proxy swift-account swift-container "
               "swift-object) is not installed: run scripts/install-system-deps.sh")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    root = tmp_path_factory.mktemp("swift")
    subprocess.run([SYSTEM_PYTHON, str(SWIFT_SCRIPT), "start", str(root)], check=True,
                   stdout=subprocess.DEVNULL)
    env = {}
    for line in (root / "env").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    try:
        yield SwiftServer(root=root, env=env)
    finally:
        subprocess.run([SYSTEM_PYTHON, str(SWIFT_SCRIPT), "stop", str(root)], check=False)


@pytest.fixture
def swift_env(swift_server: SwiftServer, monkeypatch: pytest.MonkeyPatch) -> SwiftServer:
    """Point boto3 (and so S3Store) at the Swift instance, with its credentials only."""
    for var in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    for key, value in swift_server.env.items():
        monkeypatch.setenv(key, value)
    return swift_server


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real one-node SLURM cluster (tests/slurm.py); ``SLURM_CONF`` points at it for the
    whole session, so sbatch, dask-jobqueue and ``pfd check`` submit there."""
    import slurm
    from requires import missing

    why = slurm.unavailable()
    if why:
        missing(why)
    root = tmp_path_factory.mktemp("slurm")
    cluster = slurm.start(root)
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = cluster.conf
    try:
        yield cluster
    finally:
        slurm.stop(root)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
