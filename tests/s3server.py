"""moto's HTTP S3 server for tests: a real S3 protocol peer on 127.0.0.1."""

from __future__ import annotations

import socket

# dummy secret the tests set; it must never appear in a repr, pickle or log
SECRET = "pfd-test-secret-key-must-not-leak"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
