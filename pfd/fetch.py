"""Copy a run's results out of any store into a plain directory.

Users run on a cluster against S3 and analyse on a laptop; they want the student to
drop into LAMMPS/ASE, the teacher to restart from, the DFT data to reuse, and the
report to read, without learning the store layout.  Every copied file is verified
against the store's sha256 on the way out (the store's read does that) and listed in
``manifest.json`` with its source URI.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal, get_args

from ase.io import write

from pfd import run_store as rs
from pfd.config import check_run_id
from pfd.store import ArtifactStore, NotFoundInStore

What = Literal["student", "teacher", "datasets", "report"]
ALL: tuple[What, ...] = get_args(What)


class FetchError(ValueError):
    pass


def _copy(store: ArtifactStore, key: str, dst: Path, manifest: list[dict[str, str]]) -> None:
    out = store.get_file(key, dst)
    manifest.append({"file": "", "source": store.uri(key),
                     "sha256": hashlib.sha256(out.read_bytes()).hexdigest(), "path": str(out)})


def _copy_tree(store: ArtifactStore, prefix: str, dst: Path,
               manifest: list[dict[str, str]]) -> int:
    keys = store.list(prefix.rstrip("/") + "/")
    for key in keys:
        _copy(store, key, dst / key[len(prefix.rstrip("/")) + 1:], manifest)
    return len(keys)


def fetch_run(store: ArtifactStore, run_id: str, dest: Path,
              what: tuple[What, ...] = ALL) -> dict[str, int]:
    """Copy the chosen parts of run ``run_id`` into ``dest``; returns files per part."""
    check_run_id(run_id)
    bad = [w for w in what if w not in ALL]
    if bad:
        raise FetchError(f"--what {bad[0]!r}: allowed are {', '.join(ALL)}")
    run = rs.run_key(run_id)
    if not rs.run_exists(store, run_id):
        runs = rs.list_runs(store)
        raise FetchError(f"no run {run_id!r} in store {store.url} "
                         f"(runs there: {', '.join(runs) or 'none'})")
    dest = Path(dest)
    manifest: list[dict[str, str]] = []
    counts: dict[str, int] = {}
    missing: list[str] = []
    for part in what:
        if part == "student":
            n = _copy_tree(store, rs.student_key(run_id), dest / "student", manifest)
        elif part == "teacher":
            model = rs.read_teacher_model(store, run_id)
            n = 0 if model is None else _copy_tree(store, model, dest / "teacher", manifest)
        elif part == "datasets":
            keys = rs.all_dft_keys(store, run_id)
            frames = []
            for key in keys:
                _copy(store, key, dest / "datasets" / key[len(run) + 1:], manifest)
                frames.extend(store.get_frames(key))
            for extra in rs.SYNTHETIC_DATASETS:
                if store.exists(rs.run_key(run_id, extra)):
                    _copy(store, rs.run_key(run_id, extra), dest / "datasets" / extra, manifest)
                    keys.append(extra)
            if frames:  # every DFT frame of the run in one file, the usual thing to reuse
                write(dest / "datasets" / "dft_all.extxyz", frames, format="extxyz")
            n = len(keys)
        else:
            n = _copy_tree(store, rs.report_key(run_id), dest / "report", manifest)
        counts[part] = n
        if n == 0:
            missing.append(part)
    if missing and len(missing) == len(what):
        raise NotFoundInStore(f"run {run_id!r} has no {', '.join(missing)} yet "
                              f"(status: `pfd status {run_id}`)")
    for entry in manifest:
        entry["file"] = str(Path(entry.pop("path")).relative_to(dest))
    (dest / "manifest.json").write_text(json.dumps(
        {"run_id": run_id, "store": store.url, "parts": counts, "missing": missing,
         "files": manifest}, indent=1))
    return counts
