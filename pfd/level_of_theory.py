"""What physics the labeller computes against what the foundation was trained on.

A fine-tune teaches the foundation the labeller's physics. Where the two differ only by a
constant per element (another pseudopotential family or code at the same functional),
the per-element energy shift absorbs it (:mod:`pfd.models.energy_shift`, refitted on
every fine-tune). Where they differ in the physics (another functional, +U on or off,
spin), the fine-tune has to move the model everywhere the run's frames go — and the
foundation's knowledge elsewhere is knowledge of another theory. The report says which
case a run is in, next to the shifts it fitted.

Foundation theories are those their authors documented (MPtrj: Materials Project's
VASP PBE/PBE+U relaxations with PAW potentials); a foundation pfd has no record of is
reported as unknown, never guessed.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pfd.config import PFDConfig


@dataclass(frozen=True)
class Theory:
    functional: str          # "PBE", "PBE(+U)", "r2SCAN", "PBEsol", "LDA", ... or "unknown"
    code: str                # "VASP", "Quantum ESPRESSO", "CP2K", ...
    potentials: str          # pseudopotential / basis family
    hubbard_u: str           # "no", "MP's rule (transition-metal oxides and fluorides)"
    source: str = ""         # training data, for a foundation

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


_MPTRJ = Theory("PBE(+U)", "VASP", "PAW (Materials Project's PBE set)",
                "MP's rule: on for oxides and fluorides of Co, Cr, Fe, Mn, Mo, Ni, V, W",
                "MPtrj (Materials Project relaxation trajectories)")
#: (backend, pretrained name) -> what its authors trained it on
FOUNDATIONS: dict[tuple[str, str], Theory] = {
    ("sevennet", "7net-0"): _MPTRJ,
    ("sevennet", "7net-0_22May2024"): _MPTRJ,
    ("sevennet", "7net-l3i5"): _MPTRJ,
    ("chgnet", "0.3.0"): _MPTRJ,
    ("chgnet", "0.2.0"): _MPTRJ,
    ("chgnet", "r2scan"): Theory("r2SCAN", "VASP", "PAW (Materials Project's PBE set)", "no",
                                 "MP r2SCAN calculations (transfer-learned from MPtrj)"),
}
#: the elements MP applies +U to, in oxides and fluorides
MP_U_ELEMENTS = frozenset({"Co", "Cr", "Fe", "Mn", "Mo", "Ni", "V", "W"})

# QE's functional tokens (exchange, correlation, gradient x, gradient c) -> common name
_QE_GRADIENT = {("PBE", "PBE"): "PBE", ("PSX", "PSC"): "PBEsol", ("NOGX", "NOGC"): "LDA",
                ("B88", "BLYP"): "BLYP", ("TPSS", "TPSS"): "TPSS", ("SCAN", "SCAN"): "SCAN",
                ("R2SCAN", "R2SCAN"): "r2SCAN", ("PW86", "PBC"): "PW86"}


#: VASP's GGA tag -> common name (MatPESStaticSet and MPStaticSet default to PE)
_VASP_GGA = {"PE": "PBE", "PS": "PBEsol", "91": "PW91", "RP": "RPBE", "AM": "AM05"}


def qe_functional(tokens: str) -> str:
    """'SLA PW PBE PBE' -> 'PBE' (QE's UPF ``functional`` attribute)."""
    parts = tokens.upper().split()
    if len(parts) >= 4 and (parts[2], parts[3]) in _QE_GRADIENT:
        return _QE_GRADIENT[(parts[2], parts[3])]
    return " ".join(parts) or "unknown"


def upf_info(path: Path) -> dict[str, str]:
    """Functional and pseudopotential type of a UPF file (v1 or v2)."""
    try:
        head = path.read_text(errors="replace")[:20000]
    except OSError:
        return {"functional": "unknown", "type": "unknown"}
    fn = re.search(r'functional="([^"]+)"', head) or re.search(r"Functional:\s*(.+)", head)
    kind = re.search(r'pseudo_type="([^"]+)"', head) or re.search(
        r"Pseudopotential type:\s*(\S+)", head)
    return {"functional": qe_functional(fn.group(1)) if fn else "unknown",
            "type": kind.group(1).strip() if kind else "unknown"}


def labeller_theory(cfg: PFDConfig) -> Theory:
    lab = cfg.labeller
    if lab.engine == "qe":
        infos = {el: upf_info(Path(lab.qe.pseudo_dir) / f)
                 for el, f in sorted(lab.qe.pseudopotentials.items())}
        functionals = sorted({i["functional"] for i in infos.values()}) or ["unknown"]
        kinds = ", ".join(f"{el} {i['type']}" for el, i in infos.items()) or "none given"
        return Theory(" / ".join(functionals), "Quantum ESPRESSO",
                      f"UPF ({kinds}): {', '.join(lab.qe.pseudopotentials.values())}", "no")
    if lab.engine == "cp2k":
        c = lab.cp2k
        return Theory(c.xc_functional, "CP2K", f"{c.potential} potentials, {c.basis_set}",
                      "no")
    v = lab.vasp
    incar = {k.upper(): val for k, val in v.incar.items()}
    gga = str(incar.get("GGA", "PE")).upper()
    functional = ("r2SCAN" if str(incar.get("METAGGA", "")).upper().startswith("R2SCAN")
                  else _VASP_GGA.get(gga, f"GGA={gga}"))
    if incar.get("LDAU") in (True, ".TRUE.", "T", 1):
        u = "on (INCAR LDAU)"
    elif v.input_set == "MPStaticSet":
        u = "MP's rule (MPStaticSet)"
    else:
        u = "no"
    return Theory(functional, "VASP", f"PAW ({v.potcar_functional})", u)


def differences(foundation: Theory | None, labeller: Theory,
                elements: Iterable[str]) -> list[str]:
    """What differs, one phrase each, and what a fine-tune has to do about it."""
    if foundation is None:
        return ["foundation's training theory unknown to pfd: compare it yourself"]
    out = []
    base = foundation.functional.replace("(+U)", "")
    if labeller.functional.split(" / ")[0] != base or " / " in labeller.functional:
        out.append(f"functional: foundation {foundation.functional}, labeller "
                   f"{labeller.functional} — different physics: the fine-tune must move "
                   "the model wherever the run's frames go, and not beyond them")
    if (foundation.code, foundation.potentials) != (labeller.code, labeller.potentials):
        out.append(f"code and potentials: foundation {foundation.code} {foundation.potentials}, "
                   f"labeller {labeller.code} {labeller.potentials} — absolute energies "
                   "differ by a constant per element: refitted on every fine-tune (its "
                   "energy shift, in the report)")
    els = set(elements)
    if "MP's rule" in foundation.hubbard_u and els & MP_U_ELEMENTS and els & {"O", "F"} \
            and "MP's rule" not in labeller.hubbard_u and not labeller.hubbard_u.startswith("on"):
        out.append(f"+U: the foundation used +U on {sorted(els & MP_U_ELEMENTS)} with O/F, the "
                   "labeller does not — different physics for these compounds")
    return out


def report(cfg: PFDConfig, elements: Iterable[str],
           energy_shift: dict[str, float] | None) -> dict[str, Any]:
    """The run's level-of-theory record: both theories, what differs, the fitted shifts."""
    ft = cfg.finetune
    name = str(ft.checkpoint if ft.backend == "deepmd" else ft.foundation)
    found = FOUNDATIONS.get((ft.backend, name))
    lab = labeller_theory(cfg)
    return {"foundation": {"backend": ft.backend, "name": name,
                           **(found.as_dict() if found else {"functional": "unknown"})},
            "labeller": lab.as_dict(), "differences": differences(found, lab, elements),
            "energy_shift_eV_per_atom": energy_shift or {}}


def markdown(rec: dict[str, Any]) -> str:
    f, lab = rec["foundation"], rec["labeller"]
    lines = ["| | functional | code | potentials | +U |", "|---|---|---|---|---|",
             f"| foundation ({f['backend']} {f['name']}) | {f.get('functional')} | "
             f"{f.get('code', '–')} | {f.get('potentials', '–')} | {f.get('hubbard_u', '–')} |",
             f"| labeller | {lab['functional']} | {lab['code']} | {lab['potentials']} | "
             f"{lab['hubbard_u']} |", ""]
    if f.get("source"):
        lines += [f"Foundation trained on: {f['source']}.", ""]
    lines += ([f"- {d}" for d in rec["differences"]] or ["- no difference pfd can see"]) + [""]
    if rec["energy_shift_eV_per_atom"]:
        lines += ["Element reference energies refitted to the labeller (labeller − "
                  "foundation, eV/atom): " + ", ".join(
                      f"{el} {mu:+.4f}" for el, mu in sorted(
                          rec["energy_shift_eV_per_atom"].items())) + ".", ""]
    return "\n".join(lines)
