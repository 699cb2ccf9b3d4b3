"""S3 servers for tests: moto's (fast, in memory) and OpenStack Swift + s3api (real, on disk)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

# dummy secret the tests set; it must never appear in a repr, pickle or log
SECRET = "pfd-test-secret-key-must-not-leak"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


REPO = Path(__file__).resolve().parents[1]
SWIFT_SCRIPT = REPO / "scripts" / "swift_s3.py"


@dataclass(frozen=True)
class SwiftServer:
    """A running Swift+s3api instance: its endpoint, credentials and control directory."""

    root: Path
    env: dict[str, str]

    @property
    def endpoint(self) -> str:
        return self.env["PFD_S3_ENDPOINT_URL"]

    def stop_proxy(self) -> None:
        """Take only the S3 front end down; the storage servers keep their data."""
        subprocess.run([SYSTEM_PYTHON, str(SWIFT_SCRIPT), "stop-proxy", str(self.root)],
                       check=True)

    def start_proxy(self) -> None:
        subprocess.run([SYSTEM_PYTHON, str(SWIFT_SCRIPT), "start-proxy", str(self.root)],
                       check=True)


SYSTEM_PYTHON = "/usr/bin/python3"


def swift_available() -> bool:
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import swift.common.middleware.s3api"],
                           capture_output=True)
    return probe.returncode == 0 and shutil.which("swift-ring-builder") is not None
