"""Crystal builders for the phases a multi-phase run needs, from their space groups.

``ase.build.bulk`` knows the cubic and hexagonal close-packed lattices; silicon's (and
germanium's, carbon's) high-pressure and metastable polymorphs — hexagonal diamond, β-Sn,
BC8 — are built here from space group and Wyckoff positions (International Tables,
origin choice 1 where there are two), so a config names a phase instead of shipping a
structure file for it. Every phase's sites form one Wyckoff orbit: all atoms are
equivalent, which is what lets a vacancy be "the last atom".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ase import Atoms
from ase.build import bulk
from ase.spacegroup import crystal


@dataclass(frozen=True)
class Polymorph:
    """One phase: space group, the Wyckoff site its atoms fill, and the shape defaults.

    ``c_over_a`` is the default c/a (None: cubic); ``internal`` the default free coordinate
    of the site (None: the site has none)."""

    spacegroup: int
    lattice: str           # "cubic", "hexagonal" or "tetragonal"
    site: tuple[str, ...]  # fractional coordinates, with "u" for the free parameter
    c_over_a: float | None
    internal: float | None


POLYMORPHS: dict[str, Polymorph] = {
    # lonsdaleite: P6_3/mmc, 4f (1/3, 2/3, u); the ideal tetrahedral cell has
    # c/a = sqrt(8/3) and u = 1/16; 4 atoms
    "hexagonal-diamond": Polymorph(194, "hexagonal", ("1/3", "2/3", "u"),
                                   math.sqrt(8 / 3), 1 / 16),
    # β-Sn: I4_1/amd (origin choice 1), 4a (0, 0, 0); c/a of Si's β-Sn phase (0.55,
    # McMahon & Nelmes 1993); 4 atoms conventional, 2 primitive
    "beta-sn": Polymorph(141, "tetragonal", ("0", "0", "0"), 0.552, None),
    # BC8: Ia-3, 16c (u, u, u), u = 0.1003 for Si (Crain et al. 1994); 16 atoms
    # conventional, 8 primitive
    "bc8": Polymorph(206, "cubic", ("u", "u", "u"), None, 0.1003),
}

HEXAGONAL_BULK = ("hcp",)   # ase.build.bulk crystals whose c is free
IDEAL_HCP_C_OVER_A = math.sqrt(8 / 3)


def _coordinate(text: str, u: float) -> float:
    if text == "u":
        return u
    num, _, den = text.partition("/")
    return float(num) / float(den or 1)


def build_polymorph(element: str, name: str, a: float, c: float | None = None,
                    internal: float | None = None, conventional: bool = True) -> Atoms:
    """``element`` in the polymorph ``name`` (a key of :data:`POLYMORPHS`), lattice
    constant ``a`` (Å), ``c`` (Å; default: the polymorph's c/a times a) and free site
    coordinate ``internal``; the conventional cell, or the primitive one."""
    p = POLYMORPHS[name]
    u = p.internal if internal is None else internal
    site = tuple(_coordinate(x, u if u is not None else 0.0) for x in p.site)
    if p.lattice == "cubic":
        cellpar = [a, a, a, 90.0, 90.0, 90.0]
    else:
        c_len = c if c is not None else a * float(p.c_over_a or 1.0)
        gamma = 120.0 if p.lattice == "hexagonal" else 90.0
        cellpar = [a, a, c_len, 90.0, 90.0, gamma]
    return crystal(element, [site], spacegroup=p.spacegroup, setting=1, cellpar=cellpar,
                   primitive_cell=not conventional, onduplicates="error")


def build_crystal(element: str, name: str, a: float, c: float | None = None,
                  internal: float | None = None, conventional: bool = True) -> Atoms:
    """Any phase a config may name: :data:`POLYMORPHS` here, the rest ``ase.build.bulk``
    (whose ``cubic`` cell is the conventional one; hcp's conventional cell is its
    hexagonal 2-atom cell)."""
    if name in POLYMORPHS:
        return build_polymorph(element, name, a, c, internal, conventional)
    if name in HEXAGONAL_BULK:
        return bulk(element, name, a=a, c=c if c is not None else a * IDEAL_HCP_C_OVER_A)
    return bulk(element, name, a=a, cubic=conventional)
