"""Names shared by every pfd model directory, whatever its backend, and its JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: The file in every model directory that says what the model is (its ``backend``, the
#: model file, provenance). The store's model upload writes it last, as the completion
#: marker.
MODEL_JSON = "pfd_model.json"


def read_model_json(model_dir: Path, backend: str) -> dict[str, Any]:
    """A model directory's ``pfd_model.json``, which must be of ``backend``."""
    path = Path(model_dir) / MODEL_JSON
    if not path.is_file():
        raise FileNotFoundError(f"not a pfd model directory (no {MODEL_JSON}): {model_dir}")
    meta = json.loads(path.read_text())
    if meta.get("backend") != backend:
        raise ValueError(f"{path} is a {meta.get('backend')!r} model, not {backend!r}")
    return meta


def write_model_json(model_dir: Path, meta: dict[str, Any]) -> None:
    """Written whole or not at all: the file marks a complete model directory."""
    tmp = Path(model_dir) / (MODEL_JSON + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(Path(model_dir) / MODEL_JSON)


def starting_point(base_model_dir: Path | None, foundation: str,
                   backend: str) -> tuple[str, str]:
    """(weights to start from, foundation name recorded in the new model): the foundation,
    or a previous model of the same backend (its checkpoint file)."""
    if base_model_dir is None:
        return foundation, foundation
    meta = read_model_json(Path(base_model_dir), backend)
    if meta["kind"] == "foundation":
        return meta["foundation"], meta["foundation"]
    return str(Path(base_model_dir) / meta["checkpoint"]), meta["foundation"]
