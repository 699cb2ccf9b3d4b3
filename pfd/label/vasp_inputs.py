"""VASP inputs for labels: a pymatgen input set (or the user's INCAR) made static and
label-consistent, a POSCAR grouped by species, POTCARs from ``PMG_VASP_PSP_DIR``.

pymatgen reads ``PMG_VASP_PSP_DIR`` once at import; the labeller resolves the directory
itself on every call (config, then environment), so a worker started before the variable
was set, or a test with its own POTCAR tree, sees the right files.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms

if TYPE_CHECKING:
    from pfd.config import VaspSpec

INPUT_FILES = ("INCAR", "POSCAR", "POTCAR", "KPOINTS")
# what no custodian correction may change: the physics a label's fingerprint promises
FROZEN_INCAR_KEYS = ("ENCUT", "ENAUG", "PREC", "LREAL", "ISMEAR", "SIGMA", "KSPACING",
                     "KGAMMA", "GGA", "METAGGA", "LHFCALC", "HFSCREEN", "AEXX", "AGGAX",
                     "AGGAC", "ALDAC", "IVDW", "LUSE_VDW", "LASPH", "ISPIN", "LDAU", "LDAUU",
                     "LDAUJ", "LDAUL", "LDAUTYPE", "NELECT", "LSORBIT", "LNONCOLLINEAR",
                     "ADDGRID", "NSW", "IBRION", "ISIF")
# set on every label, whatever the input set or template says
_LABEL_KEYS: dict[str, Any] = {"NSW": 0, "IBRION": -1, "ISIF": 2, "LWAVE": False,
                               "LCHARG": False, "LAECHG": False, "KGAMMA": True, "ISYM": 0}
_DROP_KEYS = ("LORBIT", "NEDOS", "LELF", "LVTOT", "LVHAR", "ICHARG", "ISTART")
_PER_STRUCTURE = ("MAGMOM", "SYSTEM", "NBANDS", "NELECT")


class PotcarError(ValueError):
    """``field`` names the ``labeller.vasp`` setting to change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _input_set_class(name: str) -> Any:
    from pymatgen.io.vasp import sets

    return getattr(sets, name)


def psp_dir(spec: VaspSpec) -> Path:
    raw = spec.psp_dir or os.environ.get("PMG_VASP_PSP_DIR")
    if not raw:
        raise PotcarError("psp_dir", "no POTCAR directory: set labeller.vasp.psp_dir or the "
                          "PMG_VASP_PSP_DIR environment variable")
    p = Path(raw).expanduser()
    if not p.is_dir():
        raise PotcarError("psp_dir", f"POTCAR directory {p} does not exist")
    return p


def potcar_functional(spec: VaspSpec) -> str:
    return spec.potcar_functional or _input_set_class(spec.input_set).CONFIG.get(
        "POTCAR_FUNCTIONAL", "PBE")


def resolve_potcars(elements: list[str], spec: VaspSpec) -> dict[str, tuple[str, Path]]:
    """Element -> (POTCAR symbol, file), in pymatgen's directory layout."""
    from pymatgen.io.vasp.inputs import POTCAR_FUNCTIONAL_MAP

    functional = potcar_functional(spec)
    if functional not in POTCAR_FUNCTIONAL_MAP:
        raise PotcarError("potcar_functional", f"unknown POTCAR functional {functional!r} "
                          f"(allowed: {sorted(POTCAR_FUNCTIONAL_MAP)})")
    root = psp_dir(spec) / POTCAR_FUNCTIONAL_MAP[functional]
    defaults = _input_set_class(spec.input_set).CONFIG.get("POTCAR", {})
    out: dict[str, tuple[str, Path]] = {}
    for el in sorted(set(elements)):
        sym = spec.potcar_symbols.get(el) or defaults.get(el)
        if isinstance(sym, dict):
            sym = sym.get("symbol")
        sym = str(sym or el)
        tried = [root / f"POTCAR.{sym}", root / sym / "POTCAR"]
        found = next((c for t in tried for c in (t, t.with_name(t.name + ".gz")) if c.is_file()),
                     None)
        if found is None:
            raise PotcarError("potcar_symbols", f"no POTCAR {sym!r} for element {el} "
                              f"(tried {', '.join(str(t) for t in tried)} and .gz)")
        out[el] = (sym, found)
    return out


def read_potcar(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode(errors="replace")


def potcar_titles(text: str) -> list[str]:
    return [t.strip() for t in re.findall(r"TITEL\s*=\s*(.+)", text)]


def group_by_species(atoms: Atoms) -> np.ndarray:
    """Order that groups atoms by species (in order of first appearance), as VASP needs;
    stable, so labels map back with the inverse permutation."""
    symbols = atoms.get_chemical_symbols()
    first = {s: i for i, s in reversed(list(enumerate(symbols)))}
    return np.array(sorted(range(len(symbols)), key=lambda i: (first[symbols[i]], i)))


def _structure(atoms: Atoms) -> Any:
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_structure(atoms)


def build_incar(atoms: Atoms, spec: VaspSpec) -> Any:
    """INCAR: input set (or template) + label keys + spec physics + ``spec.incar``."""
    from pymatgen.io.vasp.inputs import Incar

    physics: dict[str, Any] = {"ENCUT": spec.encut_eV, "KSPACING": spec.kspacing_invA,
                               "ISMEAR": spec.ismear, "SIGMA": spec.sigma_eV,
                               "EDIFF": spec.ediff_eV, "ISPIN": spec.ispin}
    if spec.incar_template is not None:
        path = Path(spec.incar_template)
        if not path.is_file():
            raise PotcarError("incar_template", f"INCAR template {path} not found")
        incar = Incar.from_file(path)
        # the template's own physics wins over spec defaults the user never set
        physics = {k: v for k, v in physics.items() if k not in incar
                   or _spec_field(k) in spec.model_fields_set}
    else:
        cls = _input_set_class(spec.input_set)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vis = cls(_structure(atoms), user_incar_settings={**physics, **_LABEL_KEYS},
                      user_potcar_functional=potcar_functional(spec), sort_structure=False)
            incar = vis.incar
    for key in _DROP_KEYS:
        incar.pop(key, None)
    incar.update(physics)
    incar.update(_LABEL_KEYS)
    incar.update(spec.incar)
    if incar.get("ISPIN", 1) == 1:
        incar.pop("MAGMOM", None)
    return incar


def _spec_field(key: str) -> str:
    return {"ENCUT": "encut_eV", "KSPACING": "kspacing_invA", "ISMEAR": "ismear",
            "SIGMA": "sigma_eV", "EDIFF": "ediff_eV", "ISPIN": "ispin"}[key]


def reference_incar(spec: VaspSpec, elements: tuple[str, ...]) -> dict[str, Any]:
    """The INCAR physics of this labeller, independent of any one frame (for fingerprints)."""
    n = max(1, len(elements))
    ref = Atoms(list(elements) or ["H"], positions=[[2.0 * i, 0, 0] for i in range(n)],
                cell=[4.0 * n, 8.0, 8.0], pbc=True)
    incar = build_incar(ref, spec)
    return {k: incar[k] for k in sorted(incar) if k not in _PER_STRUCTURE}


def write_inputs(directory: Path, atoms: Atoms, spec: VaspSpec,
                 potcars: dict[str, tuple[str, Path]]) -> None:
    """INCAR, POSCAR and POTCAR for ``atoms`` (already grouped by species); no KPOINTS:
    the mesh comes from KSPACING, the same rule for every frame."""
    from pymatgen.io.vasp.inputs import Poscar

    poscar = Poscar(_structure(atoms))
    build_incar(atoms, spec).write_file(directory / "INCAR")
    poscar.write_file(directory / "POSCAR")
    (directory / "POTCAR").write_text("".join(read_potcar(potcars[s][1])
                                              for s in poscar.site_symbols))


def physics_signature(directory: Path) -> dict[str, str]:
    """What a custodian correction must never change (see ``PhysicsGuard``)."""
    from pymatgen.io.vasp.inputs import Incar, Poscar

    sig: dict[str, str] = {}
    incar = Incar.from_file(directory / "INCAR")
    for key in FROZEN_INCAR_KEYS:
        sig[key] = repr(incar.get(key))
    s = Poscar.from_file(directory / "POSCAR", check_for_potcar=False).structure
    sig["POSCAR"] = repr((s.species, np.round(s.lattice.matrix, 6).tolist(),
                          np.round(s.frac_coords % 1.0, 6).tolist()))
    for name in ("POTCAR", "KPOINTS"):
        p = directory / name
        sig[name] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
    return sig
