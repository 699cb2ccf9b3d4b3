"""Moving paid-for DFT labels between stores: export the label cache to one extxyz file,
import it into another store.

Why: DFT hours belong to the user, not to one store. A run moved from a laptop to S3,
from one cluster to another, or started again on a fresh machine finds every frame it
already paid for, provided the labeller settings are the same: each label carries its
labeller fingerprint and the hash of the geometry it was computed for, and lands under
the same cache key (``labels/<fingerprint>/<frame hash>.extxyz``) it had, so only an
identical labeller ever reads it. An import never overwrites a label already in the
store, and refuses a frame whose geometry no longer matches its hash (an edited file) or
that carries no labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ase import Atoms

from pfd import frames as fr
from pfd.label.cache import label_key
from pfd.store import ArtifactStore

#: info key naming the labeller fingerprint of an exported label
FINGERPRINT_KEY = "labeller_fingerprint"
#: info key with the hash of the exported geometry itself. It can differ from
#: ``frame_hash`` (the hash of the engine's *input*, the cache key): an engine may return
#: positions wrapped into the cell or rounded by its output. It detects edits.
GEOMETRY_KEY = "geometry_hash"


class LabelImportError(ValueError):
    """A frame that cannot be imported, named by its index in the file."""


@dataclass(frozen=True)
class ImportResult:
    imported: int
    present: int  # already in the store: left as it was

    def summary(self) -> str:
        return f"{self.imported} labels imported, {self.present} already present"


def cached_labels(store: ArtifactStore, fingerprint: str | None = None) -> list[Atoms]:
    """Every cached label of ``store`` (of one labeller, if given), each carrying its
    labeller fingerprint and frame hash, in key order."""
    prefix = f"labels/{fingerprint}/" if fingerprint else "labels/"
    out = []
    for key in sorted(k for k in store.list(prefix) if k.endswith(".extxyz")):
        fp, name = key.removeprefix("labels/").split("/", 1)
        a = store.get_frames(key)[0]
        a.info[FINGERPRINT_KEY] = fp
        a.info["frame_hash"] = name.removesuffix(".extxyz")
        a.info[GEOMETRY_KEY] = fr.frame_hash(a)
        out.append(a)
    return out


def import_labels(store: ArtifactStore, frames: Sequence[Atoms],
                  source: str = "<frames>") -> ImportResult:
    """Put exported labels into ``store``'s label cache; checks every frame first, so a
    bad file imports nothing."""
    checked = []
    for i, a in enumerate(frames):
        fp, h, g = (a.info.get(k) for k in (FINGERPRINT_KEY, "frame_hash", GEOMETRY_KEY))
        if not fp or not h or not g:
            raise LabelImportError(f"{source}: frame {i} has no {FINGERPRINT_KEY}/frame_hash/"
                                   f"{GEOMETRY_KEY} (only files written by `pfd labels "
                                   "export` can be imported)")
        if fr.frame_hash(a) != g:
            raise LabelImportError(f"{source}: frame {i}: its geometry does not match its "
                                   f"{GEOMETRY_KEY} {g} (was the file edited?)")
        if fr.energy(a) is None or fr.forces(a) is None:
            raise LabelImportError(f"{source}: frame {i} carries no energy/forces")
        checked.append((label_key(str(fp), str(h)), a))
    imported = present = 0
    for key, a in checked:
        if store.exists(key):
            present += 1
            continue
        b = a.copy()
        b.calc = a.calc
        b.info.pop(FINGERPRINT_KEY, None)
        b.info.pop(GEOMETRY_KEY, None)
        store.put_frames(key, [b])
        imported += 1
    return ImportResult(imported, present)
