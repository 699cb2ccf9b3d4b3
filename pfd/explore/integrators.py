"""The four ensembles an exploration group may ask for, and their resumable state.

A trajectory streams its frames and, with each part, a checkpoint of everything that
drives the dynamics: positions, momenta, cell, the Langevin random stream and the
Nosé–Hoover / MTK extended variables. Restoring all of it makes a resumed trajectory
continue where it stopped on the path an uninterrupted run takes (to round-off: a
calculator's neighbour list built at another step sums in another order), so a killed
worker costs only the frames since its last part and the result does not depend on
whether the run was interrupted. The extended variables are private attributes of
ASE's integrators; ``tests/test_md_stream.py`` checks the continuation for every
ensemble, which is what catches an ASE release that renames them.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.md import MolecularDynamics
from ase.md.nose_hoover_chain import MTKNPT, IsotropicMTKNPT, NoseHooverChainNVT

from pfd.config import ENSEMBLES, NPT_ENSEMBLES

__all__ = ["ENSEMBLES", "NPT_ENSEMBLES", "integrator_state", "make_integrator",
           "restore_integrator_state"]

# attribute paths (relative to the integrator) of its extended-system variables
_THERMOSTAT = ("_thermostat._eta", "_thermostat._p_eta")
_STATE_ATTRS: dict[str, tuple[str, ...]] = {
    "nvt": (),
    "nvt-nhc": _THERMOSTAT,
    "npt": _THERMOSTAT + ("_barostat._xi", "_barostat._p_xi", "_eps", "_p_eps",
                          "_cell0", "_volume0"),
    "npt-aniso": _THERMOSTAT + ("_barostat._xi", "_barostat._p_xi", "_p_g"),
}


DEFAULT_FRICTION_PER_FS = 0.01


def damping_times_fs(timestep_fs: float, thermostat_damping_fs: float | None,
                     barostat_damping_fs: float | None) -> tuple[float, float]:
    """ASE's advice when unset: thermostat 100 and barostat 1000 timesteps."""
    return (thermostat_damping_fs if thermostat_damping_fs is not None else 100 * timestep_fs,
            barostat_damping_fs if barostat_damping_fs is not None else 1000 * timestep_fs)


def make_integrator(atoms: Atoms, ensemble: str, *, temperature_K: float,
                    timestep_fs: float, rng: np.random.Generator,
                    pressure_GPa: float | None = None, friction_per_fs: float | None = None,
                    thermostat_damping_fs: float | None = None,
                    barostat_damping_fs: float | None = None) -> MolecularDynamics:
    """An ASE integrator for ``ensemble`` acting on ``atoms`` (which carries the calculator)."""
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble {ensemble!r} unknown (allowed: {', '.join(ENSEMBLES)})")
    if (ensemble in NPT_ENSEMBLES) != (pressure_GPa is not None):
        raise ValueError(f"ensemble {ensemble!r}: pressure_GPa is required for "
                         f"{' and '.join(NPT_ENSEMBLES)} and not allowed otherwise "
                         f"(got {pressure_GPa!r})")
    dt = timestep_fs * units.fs
    if ensemble == "nvt":
        friction = DEFAULT_FRICTION_PER_FS if friction_per_fs is None else friction_per_fs
        return Langevin(atoms, dt, temperature_K=temperature_K,
                        friction=friction / units.fs, rng=rng, fixcm=False)
    tdamp_fs, pdamp_fs = damping_times_fs(timestep_fs, thermostat_damping_fs,
                                          barostat_damping_fs)
    if ensemble == "nvt-nhc":
        return NoseHooverChainNVT(atoms, dt, temperature_K=temperature_K,
                                  tdamp=tdamp_fs * units.fs)
    assert pressure_GPa is not None
    cls = IsotropicMTKNPT if ensemble == "npt" else MTKNPT
    return cls(atoms, dt, temperature_K=temperature_K, pressure_au=pressure_GPa * units.GPa,
               tdamp=tdamp_fs * units.fs, pdamp=pdamp_fs * units.fs)


def _owner(dyn: Any, path: str) -> tuple[Any, str]:
    *parents, name = path.split(".")
    return functools.reduce(getattr, parents, dyn), name


def integrator_state(dyn: MolecularDynamics, ensemble: str) -> dict[str, Any]:
    """JSON-ready extended-system variables of ``dyn`` (not positions/momenta/cell)."""
    state: dict[str, Any] = {}
    for path in _STATE_ATTRS[ensemble]:
        owner, name = _owner(dyn, path)
        state[path] = np.asarray(getattr(owner, name), dtype=float).tolist()
    if ensemble == "nvt":
        state["rng"] = dyn.rng.bit_generator.state  # type: ignore[attr-defined]
    return state


def restore_integrator_state(dyn: MolecularDynamics, ensemble: str,
                             state: dict[str, Any]) -> None:
    """Inverse of :func:`integrator_state`; the integrator was built on the restored atoms."""
    for path in _STATE_ATTRS[ensemble]:
        owner, name = _owner(dyn, path)
        old = getattr(owner, name)
        value = np.asarray(state[path], dtype=float)
        if isinstance(old, np.ndarray):
            old = old.copy()
            old[...] = value
            setattr(owner, name, old)
        else:
            setattr(owner, name, float(value))
    if ensemble == "nvt":
        dyn.rng.bit_generator.state = state["rng"]  # type: ignore[attr-defined]
    # the NH integrators keep their own copies of positions/momenta/cell from construction
    if hasattr(dyn, "_update_atoms"):
        dyn._update_atoms()  # type: ignore[attr-defined]
