"""From the ``labeller:`` section of a config to a Labeller, and the checks that let a
config fail at load time (an element with no pseudopotential, basis or POTCAR) instead
of after the first hour of exploration."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pfd.config import LabellerSpec
    from pfd.label.base import Labeller


class LabellerConfigError(ValueError):
    """``field`` is the path below ``labeller.`` that the user has to change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_labeller(spec: LabellerSpec, elements: Sequence[str]) -> None:
    els = sorted(set(elements))
    if spec.engine == "qe":
        from pfd.label.qe import resolve_pseudopotentials

        try:
            resolve_pseudopotentials(els, spec.qe)
        except (FileNotFoundError, KeyError) as err:
            raise LabellerConfigError("qe.pseudopotentials", str(err).strip("'\"")) from None
    elif spec.engine == "cp2k":
        from pfd.label.cp2k_inputs import Cp2kDataError, resolve_basis_and_potentials

        try:
            resolve_basis_and_potentials(els, spec.cp2k)
        except FileNotFoundError as err:
            raise LabellerConfigError("cp2k.data_dir", str(err)) from None
        except Cp2kDataError as err:
            raise LabellerConfigError(f"cp2k.{err.field}", str(err)) from None
    elif spec.engine == "vasp":
        from pfd.label.vasp_inputs import PotcarError, resolve_potcars

        try:
            resolve_potcars(els, spec.vasp)
        except PotcarError as err:
            raise LabellerConfigError(f"vasp.{err.field}", str(err)) from None
    else:  # pragma: no cover - the config Literal forbids it
        raise LabellerConfigError("engine", f"unknown engine {spec.engine!r}")


def make_labeller(spec: LabellerSpec, elements: Sequence[str]) -> Labeller:
    els = tuple(sorted(set(elements)))
    if spec.engine == "qe":
        from pfd.label.qe import QELabeller

        return QELabeller(spec.qe, elements=els)
    if spec.engine == "cp2k":
        from pfd.label.cp2k import CP2KLabeller

        return CP2KLabeller(spec.cp2k, elements=els)
    if spec.engine == "vasp":
        from pfd.label.vasp import VaspLabeller

        return VaspLabeller(spec.vasp, elements=els)
    raise ValueError(f"labeller.engine: unknown engine {spec.engine!r} (qe, cp2k, vasp)")
