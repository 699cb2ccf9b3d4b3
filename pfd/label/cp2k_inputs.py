"""CP2K inputs for labels, built with ``pymatgen.io.cp2k`` and corrected where it falls short.

What pymatgen's ``DftSet`` does not do right for labelling, and what we do instead:

- it drops a per-element ``potential_filename`` (only the global one survives) and writes
  ``PROJECT_NAME CP2K`` whatever ``project_name`` says: we pass the file names globally
  and set the project name on the finished input;
- its Γ-centred k-points are reduced with the crystal's full point group, but CP2K does not
  symmetrise the density, so a symmetric cell would get wrong forces and stress: we write
  the Γ-centred grid ourselves, reduced by time reversal only (always exact);
- it prints cubes, DOS and PDOS by default: all off (they cost disk and time per frame);
- its input parser swaps the first two entries of a repeated keyword, so after any custodian
  correction (which re-parses and rewrites the input) the first two atoms of ``&COORD``
  trade places and the forces would belong to the wrong atoms: coordinates go in a
  separate XYZ file (``&TOPOLOGY``) that custodian never rewrites, and the parser checks
  the coordinates CP2K echoes against the frame.

Basis sets and pseudopotentials are looked up by name in CP2K's own data files, so a
missing element fails at config time with the names that do exist.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ase import Atoms
from ase.data import chemical_symbols

from pfd.label.kpoints import kpoint_mesh

if TYPE_CHECKING:
    from pfd.config import CP2KSpec

INPUT_FILE, OUTPUT_FILE, STDERR_FILE, PROJECT = "cp2k.inp", "cp2k.out", "std_err.txt", "pfd"
COORD_FILE = "pfd.xyz"
_SYMBOLS = set(chemical_symbols[1:])


class Cp2kDataError(KeyError):
    """A basis set or potential is not in CP2K's data files; ``field`` is the setting."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class KindData:
    basis: str
    potential: str
    basis_block: str
    potential_block: str

    def digest(self) -> str:
        return hashlib.sha256((self.basis_block + self.potential_block).encode()).hexdigest()[:16]


def _entries(path: Path) -> dict[str, list[tuple[list[str], str]]]:
    """Per element: (names, text block) of each entry of a CP2K basis/potential file."""
    out: dict[str, list[tuple[list[str], str]]] = {}
    current: list[str] | None = None
    el = ""
    for raw in path.read_text(errors="replace").splitlines():
        line = raw.split("#", 1)[0].strip()
        tokens = line.split()
        if len(tokens) >= 2 and tokens[0] in _SYMBOLS and not _is_number(tokens[1]):
            el = tokens[0]
            current = [line]
            out.setdefault(el, []).append((tokens[1:], ""))
        elif current is not None and line:
            current.append(line)
        if current is not None and el:
            names, _ = out[el][-1]
            out[el][-1] = (names, "\n".join(current))
    return out


def _is_number(token: str) -> bool:
    try:
        float(token.replace("D", "E").replace("d", "e"))
    except ValueError:
        return False
    return True


def _find(entries: dict[str, list[tuple[list[str], str]]], el: str, name: str,
          what: str, path: Path) -> tuple[list[str], str]:
    for names, block in entries.get(el, []):
        if name.upper() in (n.upper() for n in names):
            return names, block
    have = sorted({n for names, _ in entries.get(el, []) for n in names})
    raise Cp2kDataError("basis_sets" if what == "basis set" else "potentials",
                        f"no {what} {name!r} for element {el} in {path} "
                        f"(available for {el}: {have or 'none'})")


def resolve_basis_and_potentials(elements: list[str], spec: CP2KSpec) -> dict[str, KindData]:
    """Each element's basis set and GTH potential, checked against the data files."""
    ddir = Path(spec.data_dir)
    bfile, pfile = ddir / spec.basis_file, ddir / spec.potential_file
    for f, field in ((bfile, "basis_file"), (pfile, "potential_file")):
        if not f.is_file():
            raise FileNotFoundError(f"{field} {f} not found (install Debian's cp2k-data or set "
                                    "labeller.cp2k.data_dir)")
    basis_entries, pot_entries = _entries(bfile), _entries(pfile)
    out = {}
    for el in sorted(set(elements)):
        b = spec.basis_sets.get(el, spec.basis_set)
        p = spec.potentials.get(el, spec.potential)
        b_names, b_block = _find(basis_entries, el, b, "basis set", bfile)
        p_names, p_block = _find(pot_entries, el, p, "potential", pfile)
        qb, qp = _valence(b_names), _valence(p_names)
        if qb is not None and qp is not None and qb != qp:
            raise Cp2kDataError("potentials", f"element {el}: basis set {b!r} is for {qb} "
                                f"valence electrons but potential {p!r} has {qp}; pick a "
                                "matching pair")
        out[el] = KindData(b, p, b_block, p_block)
    return out


def _valence(names: list[str]) -> int | None:
    """The '-qN' valence count that CP2K basis and potential names carry."""
    for n in names:
        m = re.search(r"-q(\d+)$", n)
        if m:
            return int(m.group(1))
    return None


def gamma_grid_time_reversal(mesh: tuple[int, int, int]) -> tuple[list[list[float]], list[float]]:
    """Γ-centred grid in reduced coordinates with k and -k merged (weights 1 or 2)."""
    seen: dict[tuple[int, ...], int] = {}
    kpts: list[list[float]] = []
    weights: list[float] = []
    for idx in itertools.product(*(range(n) for n in mesh)):
        key = tuple(i % n for i, n in zip(idx, mesh, strict=True))
        neg = tuple((-i) % n for i, n in zip(idx, mesh, strict=True))
        if neg in seen:
            weights[seen[neg]] += 1
            continue
        seen[key] = len(kpts)
        frac = [((i + n // 2) % n - n // 2) / n for i, n in zip(idx, mesh, strict=True)]
        kpts.append(frac)
        weights.append(1.0)
    return kpts, weights


def build_input(atoms: Atoms, spec: CP2KSpec, kinds: dict[str, KindData]) -> tuple[str, str]:
    """``cp2k.inp`` (ENERGY_FORCE, analytical stress) and the coordinate file for one frame."""
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.cp2k.inputs import Keyword, Section
    from pymatgen.io.cp2k.inputs import Kpoints as Cp2kKpoints
    from pymatgen.io.cp2k.sets import DftSet

    structure = AseAtomsAdaptor.get_structure(atoms)
    bp: dict[str, object] = {el: {"basis": k.basis, "potential": k.potential}
                             for el, k in kinds.items()}
    # per-element file names are dropped by DftSet: give them globally
    bp["basis_filenames"] = [spec.basis_file]
    bp["potential_filename"] = spec.potential_file
    with warnings.catch_warnings():  # "unable to validate basis": we validated it ourselves
        warnings.simplefilter("ignore")
        ds = DftSet(structure, project_name=PROJECT, basis_and_potential=bp,
                    xc_functionals=[spec.xc_functional], ot=False, smearing=True,
                    elec_temp=spec.electronic_temperature_K,
                    spin_polarized=spec.spin_polarized, cutoff=spec.cutoff_Ry,
                    rel_cutoff=spec.rel_cutoff_Ry, eps_default=spec.eps_default,
                    eps_scf=spec.eps_scf, alpha=spec.mixing_alpha, print_dos=False,
                    print_pdos=False, print_mo_cubes=False, print_v_hartree=False,
                    print_e_density=False, print_forces=True, kpoints=None)
    ds["GLOBAL"]["PROJECT_NAME"] = Keyword("PROJECT_NAME", PROJECT)  # DftSet ignores it
    scf = ds["FORCE_EVAL"]["DFT"]["SCF"]
    scf["MAX_SCF"] = Keyword("MAX_SCF", spec.max_scf)
    # a frame is independent of the previous one: no stale wavefunction is ever read
    scf["SCF_GUESS"] = Keyword("SCF_GUESS", "ATOMIC")
    ds["FORCE_EVAL"]["STRESS_TENSOR"] = Keyword("STRESS_TENSOR", "ANALYTICAL")
    mesh = kpoint_mesh(atoms, spec.kspacing_invA)
    if mesh != (1, 1, 1):
        kpts, weights = gamma_grid_time_reversal(mesh)
        ds["FORCE_EVAL"]["DFT"].insert(Cp2kKpoints(kpts=kpts, weights=weights,
                                                   scheme="GENERAL", units="B_VECTOR"))
    subsys = ds["FORCE_EVAL"]["SUBSYS"]
    kind_of: dict[str, str] = {}
    for name, sec in subsys.subsections.items():
        if sec.name.upper() == "KIND":
            el = str(sec["ELEMENT"].values[0])
            if el in kind_of:
                raise ValueError(f"two CP2K kinds for element {el}: {kind_of[el]}, {name}")
            kind_of[el] = str(sec.section_parameters[0])
    subsys.subsections.pop("COORD")
    subsys.insert(Section("TOPOLOGY", subsections={}, keywords={
        "COORD_FILE_NAME": Keyword("COORD_FILE_NAME", COORD_FILE),
        "COORD_FILE_FORMAT": Keyword("COORD_FILE_FORMAT", "XYZ")}))
    lines = [str(len(atoms)), "pfd frame (Angstrom)"]
    lines += [f"{kind_of[el]} {x:.10f} {y:.10f} {z:.10f}"
              for el, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions,
                                       strict=True)]
    return ds.get_str(), "\n".join(lines) + "\n"


def physics_signature(directory: Path) -> dict[str, str]:
    """What a custodian correction must never change (see ``PhysicsGuard``): structure,
    basis/potentials, cutoffs, functional, k-points, smearing, spin, charge."""
    from pymatgen.io.cp2k.inputs import Cp2kInput

    ci = Cp2kInput.from_file(str(directory / INPUT_FILE))
    coords = directory / COORD_FILE
    sig: dict[str, str] = {"COORD_FILE": hashlib.sha256(coords.read_bytes()).hexdigest()
                           if coords.is_file() else ""}
    paths = {"SUBSYS": "FORCE_EVAL/SUBSYS", "XC_FUNCTIONAL": "FORCE_EVAL/DFT/XC/XC_FUNCTIONAL",
             "KPOINTS": "FORCE_EVAL/DFT/KPOINTS", "SMEAR": "FORCE_EVAL/DFT/SCF/SMEAR"}
    for name, path in paths.items():
        # sorted lines: the parser reorders repeated keywords (KPOINT) on every round trip
        sig[name] = "\n".join(sorted(ci.by_path(path).get_str().splitlines())) \
            if ci.check(path) else ""
    mgrid = ci.by_path("FORCE_EVAL/DFT/MGRID") if ci.check("FORCE_EVAL/DFT/MGRID") else None
    for kw in ("CUTOFF", "REL_CUTOFF"):
        sig[kw] = str(mgrid.get(kw).values if mgrid is not None and mgrid.get(kw) else "")
    dft = ci.by_path("FORCE_EVAL/DFT")
    for kw in ("UKS", "LSD", "CHARGE", "MULTIPLICITY", "BASIS_SET_FILE_NAME",
               "POTENTIAL_FILE_NAME"):
        sig[kw] = str(dft.get(kw).values if dft.get(kw) else "")
    return sig
