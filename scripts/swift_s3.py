#!/usr/bin/python3
"""A real, disk-backed S3 endpoint on 127.0.0.1: OpenStack Swift with its s3api middleware.

moto answers S3 calls from memory; Swift stores objects on disk behind a proxy that
checks S3 v4 signatures and implements multipart uploads the way a production object
store does, and it can be stopped and restarted under a client (the reliability tests
do that).  It runs from Debian's ``swift-*`` packages, so this script runs with the
system ``/usr/bin/python3`` that can import them, not the project virtualenv.

    swift_s3.py start DIR [--port N]   # write configs + rings under DIR, start, wait
    swift_s3.py stop DIR               # stop the four servers of DIR
    swift_s3.py stop-proxy DIR         # take only the S3 front end down (fault tests)
    swift_s3.py start-proxy DIR        # bring it back on the same port

``start`` prints shell ``export`` lines (endpoint, credentials, bucket) and writes them
to ``DIR/env``.  Credentials are generated per instance and never leave DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SERVERS = ("account", "container", "object", "proxy")
PIPELINE = ("catch_errors gatekeeper healthcheck proxy-logging cache listing_formats "
            "s3api tempauth copy slo dlo proxy-logging proxy-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_configs(root: Path, proxy_port: int, user: str, key: str) -> dict[str, int]:
    ports = {"account": _free_port(), "container": _free_port(), "object": _free_port(),
             "proxy": proxy_port}
    conf = root / "etc"
    devices = root / "devices"
    (devices / "d1").mkdir(parents=True, exist_ok=True)
    conf.mkdir(exist_ok=True)
    (root / "run").mkdir(exist_ok=True)
    (root / "log").mkdir(exist_ok=True)
    (conf / "swift.conf").write_text(
        "[swift-hash]\n"
        f"swift_hash_path_suffix = {secrets.token_hex(8)}\n"
        f"swift_hash_path_prefix = {secrets.token_hex(8)}\n"
        "[storage-policy:0]\nname = Policy-0\ndefault = yes\n")
    common = (f"[DEFAULT]\nbind_ip = 127.0.0.1\nworkers = 0\nswift_dir = {conf}\n"
              f"devices = {devices}\nmount_check = false\nlog_name = %s\n"
              "log_facility = LOG_LOCAL0\nlog_level = WARNING\n"
              "disable_fallocate = true\n")
    for kind in ("account", "container", "object"):
        (conf / f"{kind}-server.conf").write_text(
            common % kind + f"bind_port = {ports[kind]}\n\n"
            f"[pipeline:main]\npipeline = {kind}-server\n\n"
            f"[app:{kind}-server]\nuse = egg:swift#{kind}\n")
    (conf / "proxy-server.conf").write_text(
        common % "proxy" + f"bind_port = {ports['proxy']}\n\n"
        f"[pipeline:main]\npipeline = {PIPELINE}\n\n"
        "[app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n"
        # Fail fast when a backend is down, so clients see an error and retry.
        "conn_timeout = 2\nnode_timeout = 20\n\n"
        "[filter:s3api]\nuse = egg:swift#s3api\nlocation = us-east-1\n"
        "s3_acl = false\ncheck_bucket_owner = false\n\n"
        "[filter:tempauth]\nuse = egg:swift#tempauth\n"
        f"user_pfd_{user} = {key} .admin\n\n"
        "[filter:catch_errors]\nuse = egg:swift#catch_errors\n\n"
        "[filter:gatekeeper]\nuse = egg:swift#gatekeeper\n\n"
        "[filter:healthcheck]\nuse = egg:swift#healthcheck\n\n"
        "[filter:proxy-logging]\nuse = egg:swift#proxy_logging\n\n"
        # No memcached here: the cache falls back to misses, which tempauth tolerates.
        "[filter:cache]\nuse = egg:swift#memcache\nmemcache_servers = 127.0.0.1:1\n\n"
        "[filter:listing_formats]\nuse = egg:swift#listing_formats\n\n"
        "[filter:copy]\nuse = egg:swift#copy\n\n"
        "[filter:slo]\nuse = egg:swift#slo\n\n"
        "[filter:dlo]\nuse = egg:swift#dlo\n")
    for kind in ("account", "container", "object"):
        builder = str(conf / f"{kind}.builder")
        for args in (["create", "8", "1", "1"],
                     ["add", f"r1z1-127.0.0.1:{ports[kind]}/d1", "100"],
                     ["rebalance"]):
            subprocess.run(["swift-ring-builder", builder, *args], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (root / "ports.json").write_text(json.dumps(ports))
    return ports


def _spawn(root: Path, kind: str) -> None:
    conf = root / "etc" / f"{kind}-server.conf"
    log = open(root / "log" / f"{kind}.log", "ab")  # noqa: SIM115 - handed to the child
    # The servers read swift.conf from a fixed /etc path unless told otherwise.
    code = ("import sys\nfrom swift.common import utils\n"
            f"utils.set_swift_dir({str(root / 'etc')!r})\n"
            "from swift.common.wsgi import run_wsgi\n")
    if kind == "object":
        code += ("from swift.obj import server\n"
                 f"sys.exit(run_wsgi({str(conf)!r}, 'object-server', "
                 "global_conf_callback=server.global_conf_callback))\n")
    else:
        code += f"sys.exit(run_wsgi({str(conf)!r}, '{kind}-server'))\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    (root / "run" / f"{kind}.pid").write_text(str(proc.pid))


def _wait_healthy(port: int, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"swift proxy on 127.0.0.1:{port} not healthy after {timeout:.0f} s")


def _stop(root: Path, kinds: tuple[str, ...] = SERVERS) -> None:
    for kind in kinds:
        pid_file = root / "run" / f"{kind}.pid"
        if not pid_file.is_file():
            continue
        pid = int(pid_file.read_text())
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pid_file.unlink()
            continue
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.killpg(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)


def start(root: Path, port: int | None) -> None:
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    _stop(root)
    user = "tester"
    key = secrets.token_urlsafe(24)
    ports = _write_configs(root, port or _free_port(), user, key)
    for kind in SERVERS:
        _spawn(root, kind)
    _wait_healthy(ports["proxy"])
    env = {"PFD_S3_ENDPOINT_URL": f"http://127.0.0.1:{ports['proxy']}",
           "AWS_ACCESS_KEY_ID": f"pfd:{user}", "AWS_SECRET_ACCESS_KEY": key,
           "AWS_DEFAULT_REGION": "us-east-1"}
    text = "".join(f"export {k}={v}\n" for k, v in env.items())
    (root / "env").write_text(text)
    (root / "env").chmod(0o600)
    sys.stdout.write(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("action", choices=["start", "stop", "stop-proxy", "start-proxy"])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--port", type=int, default=None)
    args = ap.parse_args()
    if args.action == "start":
        start(args.dir, args.port)
    elif args.action == "stop":
        _stop(args.dir.resolve())
    elif args.action == "stop-proxy":
        _stop(args.dir.resolve(), ("proxy",))
    else:
        root = args.dir.resolve()
        _spawn(root, "proxy")
        _wait_healthy(json.loads((root / "ports.json").read_text())["proxy"])


if __name__ == "__main__":
    main()
