"""Caches shared between processes stay correct when many processes hit them at once.

Eight processes start each round together (a barrier) and race on the same objects:

* the local model cache: all fetch the same stored model into one cache directory. None
  may fail, none may see a partial copy, and a copy one of them is reading is never
  deleted under it (the race that broke ``make demo``: the loser of a download race used
  to ``rmtree`` the winner's finished copy);
* the label cache: all label the same frames into one store. Each writes labels that
  differ in their bytes (its pid rides in ``info``), the worst case for a key written as
  data + checksum: every label must read back verified, and every process must get a
  label for every frame.

50 rounds each. The processes are real OS processes (``spawn``), like Dask workers.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase.build import bulk

pytestmark = pytest.mark.slow  # about 75 s: 8 spawned processes x 50 rounds, twice

N_PROC = 8
ROUNDS = 50


def _race(target: Any, *args: Any) -> None:
    """Run ``target(*args, barrier, errors)`` in N_PROC spawned processes; every process
    must exit 0 and report no error."""
    ctx = mp.get_context("spawn")
    barrier, errors = ctx.Barrier(N_PROC), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, errors)) for _ in range(N_PROC)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert [p.exitcode for p in procs] == [0] * N_PROC
    assert found == []


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fetch_rounds(store_url: str, key: str, cache_base: str, expected: dict[str, str],
                  barrier: Any, errors: Any) -> None:
    from pfd.model_cache import fetch_model

    for r in range(ROUNDS):
        barrier.wait()
        try:
            local = fetch_model(store_url, key, Path(cache_base) / f"round-{r:02d}")
            # read every file as a loader would, while the others may still be publishing
            got = {p.relative_to(local).as_posix(): _sha(p)
                   for p in sorted(local.rglob("*")) if p.is_file()}
            if got != expected:
                errors.put(f"round {r}: copy differs from the stored model: {sorted(got)}")
        except Exception as err:  # noqa: BLE001 - reported to the parent
            errors.put(f"round {r}: {type(err).__name__}: {err}")


@pytest.mark.slow
def test_eight_processes_fetch_one_model_50_rounds(tmp_path: Path) -> None:
    from pfd.model_cache import upload_model
    from pfd.models.meta import MODEL_JSON
    from pfd.store import open_store

    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    (model / "weights.bin").write_bytes(rng.bytes(2 << 20))  # big enough to take time
    (model / "sub" / "extra.bin").write_bytes(rng.bytes(64 << 10))
    (model / MODEL_JSON).write_text('{"backend": "test", "kind": "student"}')
    expected = {p.relative_to(model).as_posix(): _sha(p)
                for p in sorted(model.rglob("*")) if p.is_file()}
    store = open_store(str(tmp_path / "store"))
    upload_model(store, "runs/r/models/m", model)

    _race(_fetch_rounds, store.url, "runs/r/models/m", str(tmp_path / "cache"), expected)
    for r in range(ROUNDS):
        models = tmp_path / "cache" / f"round-{r:02d}" / "models"
        # exactly one published copy per round, no temporary or stale directory left
        # (the publishers' lock file stays)
        assert sorted(p.name for p in models.iterdir() if not p.name.endswith(".lock")) \
            == ["runs_r_models_m"]


def _pid_emt() -> Any:
    from ase.calculators.emt import EMT

    return EMT()


class _PidLabeller:
    """A real ASE-calculator labeller whose labels carry the writing process's pid, so
    concurrent writers of one key write different bytes."""

    def __init__(self) -> None:
        from pfd.label.calculator import CalculatorLabeller

        self.inner = CalculatorLabeller(_pid_emt, identity="emt-concurrency-test",
                                        batch_size=1)

    def fingerprint(self) -> str:
        return self.inner.fingerprint()

    def label(self, atoms: Any, workdir: Path) -> Any:
        out = self.inner.label(atoms, workdir)
        out.info["writer_pid"] = os.getpid()
        return out


def _label_rounds(store_url: str, frames_by_round: list[list[Any]], scratch: str,
                  barrier: Any, errors: Any) -> None:
    from pfd.label.cache import label_frames

    labeller = _PidLabeller()
    for r, frames in enumerate(frames_by_round):
        barrier.wait()
        try:
            res = label_frames(labeller, frames, store_url, scratch=scratch)
            if len(res.labelled) != len(frames) or res.failed:
                errors.put(f"round {r}: {len(res.labelled)} labelled, "
                           f"{[f.reason for f in res.failed]}")
        except Exception as err:  # noqa: BLE001 - reported to the parent
            errors.put(f"round {r}: {type(err).__name__}: {err}")


@pytest.mark.slow
def test_eight_processes_label_the_same_frames_50_rounds(tmp_path: Path) -> None:
    from pfd.frames import frame_hash
    from pfd.label.cache import label_key
    from pfd.store import open_store

    frames_by_round = []
    for r in range(ROUNDS):
        batch = []
        for k in range(3):
            a = bulk("Cu", "fcc", a=3.6, cubic=True)
            a.rattle(0.05, seed=1000 * r + k)
            batch.append(a)
        frames_by_round.append(batch)
    store = open_store(str(tmp_path / "store"))
    _race(_label_rounds, store.url, frames_by_round, str(tmp_path / "scratch"))
    fp = _PidLabeller().fingerprint()
    for frames in frames_by_round:
        for a in frames:
            label = store.get_frames(label_key(fp, frame_hash(a)))[0]  # sha256-verified
            assert label.info["writer_pid"] > 0
            assert np.allclose(label.positions, a.positions)


@pytest.mark.parametrize("n_workers", [2])
def test_parallel_fetch_on_dask_workers_shares_one_copy(tmp_path: Path, n_workers: int) -> None:
    """The demo's path: Dask workers of one LocalCluster load the same model at once."""
    from dask.distributed import Client, LocalCluster

    from pfd.model_cache import fetch_model, upload_model
    from pfd.models.meta import MODEL_JSON
    from pfd.store import open_store

    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(os.urandom(1 << 20))
    (model / MODEL_JSON).write_text("{}")
    store = open_store(str(tmp_path / "store"))
    upload_model(store, "m", model)
    with LocalCluster(n_workers=n_workers, threads_per_worker=2, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        futs = client.map(lambda i: str(fetch_model(store.url, "m", tmp_path / "c")),
                          range(16), pure=False)
        paths = set(client.gather(futs))
    assert paths == {str(tmp_path / "c" / "models" / "m")}
    assert _sha(tmp_path / "c" / "models" / "m" / "w.bin") == _sha(model / "w.bin")
