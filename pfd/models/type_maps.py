"""Which elements a foundation checkpoint knows, answered without loading the model.

Config validation needs this to refuse a structure the foundation cannot represent, but
importing sevenn/torch and unpickling a checkpoint costs seconds; a small JSON cache keyed
by the checkpoint file's path, size and mtime keeps ``pfd check`` fast after the first call.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pfd" / "foundation_type_maps.json"


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _read_cache() -> dict[str, dict[str, object]]:
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache: dict[str, dict[str, object]]) -> None:
    f = _cache_file()
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f"{f.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        tmp.replace(f)
    except OSError:
        pass  # a read-only home only costs speed


def _sevennet_species(checkpoint: Path) -> list[str]:
    import torch

    cp = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
    species = (cp.get("config") or {}).get("chemical_species")
    if not species:
        raise FileNotFoundError(f"{checkpoint}: no chemical_species in its config")
    return sorted(str(s) for s in species)


def foundation_type_map(backend: str, foundation: str) -> list[str] | None:
    """Elements of the foundation's type map; None when the backend cannot tell."""
    if backend == "chgnet":
        from pfd.models.chgnet import foundation_elements

        return foundation_elements(foundation)  # no model load for a shipped name
    if backend == "mace":
        from pfd.models.mace import foundation_elements as mace_elements

        return mace_elements(foundation)  # the file's atomic_numbers, read in .venv-mace
    if backend != "sevennet":
        return None
    entry = _read_cache().get(f"sevennet:{foundation}")
    if isinstance(entry, dict):
        path = Path(str(entry.get("path")))
        try:
            if path.is_file() and _stat_key(path) == entry.get("stat"):
                return list(entry["species"])  # type: ignore[arg-type]
        except OSError:
            pass
    from pfd.models.sevennet import checkpoint_path

    path = Path(checkpoint_path(foundation))
    species = _sevennet_species(path)
    cache = _read_cache()
    cache[f"sevennet:{foundation}"] = {"path": str(path), "stat": _stat_key(path),
                                       "species": species}
    _write_cache(cache)
    return species
