"""One flow at a time per run: a lease in the store, refreshed while the flow runs.

Two flows working on one run (a user starting ``pfd run`` twice, a deployment rerun
while the first is still going) would train into the same work directories and race on
every record. The second one refuses at start, naming who holds the run, instead.

The lease is ``runs/<id>/lease.json``: owner (host, pid, a random token), when it was
taken and a heartbeat a background thread refreshes every ``HEARTBEAT_S``. The store has
no compare-and-swap, so taking it is write-then-verify: write our token, wait
``SETTLE_S``, read it back; if another flow wrote after us, it won and we refuse. A
lease whose holder is gone is taken over: at once when the holder ran on this host and
its pid is dead (a killed ``pfd run`` can be resumed straight away), else when its
heartbeat is older than ``STALE_S`` (a holder on another machine that died).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from pfd.run_store import run_key
from pfd.store import ArtifactStore, NotFoundInStore

HEARTBEAT_S = 20.0
STALE_S = 120.0
SETTLE_S = 1.0

__all__ = ["RunBusy", "check_free", "hold_run", "lease_key", "read_lease"]


class RunBusy(RuntimeError):
    """Another live flow holds the run."""


def lease_key(run_id: str) -> str:
    return run_key(run_id, "lease.json")


def read_lease(store: ArtifactStore, run_id: str) -> dict[str, Any] | None:
    try:
        return dict(store.get_json(lease_key(run_id)))
    except NotFoundInStore:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder_alive(lease: dict[str, Any], now: float) -> bool:
    if now - float(lease.get("heartbeat", 0.0)) > STALE_S:
        return False
    if lease.get("host") == socket.gethostname():
        return _pid_alive(int(lease.get("pid", -1)))
    return True


def _describe(lease: dict[str, Any], now: float) -> str:
    who = f"pid {lease.get('pid')} on {lease.get('host')}"
    if lease.get("flow_run"):
        who += f" (Prefect flow run {lease['flow_run']})"
    return (f"{who}, since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(lease['since']))}"
            f", last heartbeat {now - float(lease['heartbeat']):.0f} s ago")


def check_free(store: ArtifactStore, run_id: str) -> None:
    """Raise :class:`RunBusy` when a live flow holds the run (``pfd run`` asks before it
    starts a flow, so a refusal is one line; :func:`hold_run` decides for good)."""
    now = time.time()
    held = read_lease(store, run_id)
    if held is not None and _holder_alive(held, now):
        raise RunBusy(f"run {run_id!r} is already being run by {_describe(held, now)}; "
                      "wait for it to finish (pfd status) or stop it, then rerun: it resumes "
                      "from the store")


@contextlib.contextmanager
def hold_run(store: ArtifactStore, run_id: str, flow_run: str = "") -> Iterator[dict[str, Any]]:
    """Hold the run's lease for the ``with`` block, or raise :class:`RunBusy` at once."""
    key = lease_key(run_id)
    check_free(store, run_id)
    now = time.time()
    mine = {"token": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(),
            "flow_run": flow_run, "since": now, "heartbeat": now}
    store.put_json(key, mine)
    time.sleep(SETTLE_S)
    got = read_lease(store, run_id)
    if got is None or got.get("token") != mine["token"]:
        raise RunBusy(f"run {run_id!r} was taken by another flow starting at the same time "
                      f"({_describe(got, time.time()) if got else 'unknown'}); rerun once it "
                      "has finished")
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a missed beat only shortens the lease
                store.put_json(key, mine | {"heartbeat": time.time()})

    thread = threading.Thread(target=beat, name=f"pfd-lease-{run_id}", daemon=True)
    thread.start()
    try:
        yield mine
    finally:
        stop.set()
        thread.join(timeout=5)
        with contextlib.suppress(Exception):
            if (read_lease(store, run_id) or {}).get("token") == mine["token"]:
                store.delete(key)
