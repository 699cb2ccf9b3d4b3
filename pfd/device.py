"""Which device the torch-based steps use: ``cluster.device`` (``auto | cpu | cuda``).

Why a setting when SevenNet, DeePMD and torch all pick CUDA by themselves when they see
it: a user must be able to *keep* a job off a GPU (a shared node, a GPU busy with another
job, a CUDA build that does not match the driver) and to *insist* on one, failing at once
with a line that says so instead of running ten times slower on the CPU unnoticed.

The setting travels to every process as :data:`DEVICE_VAR` in the environment (the run's
local workers, batch-job workers, ``dp`` and LAMMPS subprocesses inherit it), together with
DeePMD's own ``DEVICE=cpu``; in-process steps ask :func:`torch_device`.
"""

from __future__ import annotations

import os
from typing import Literal, get_args

Device = Literal["auto", "cpu", "cuda"]
CHOICES: tuple[str, ...] = get_args(Device)
#: the environment variable carrying ``cluster.device`` to worker processes
DEVICE_VAR = "PFD_DEVICE"


class DeviceError(RuntimeError):
    """``cluster.device: cuda`` where torch sees no CUDA device."""


def requested() -> str:
    """This process's setting: :data:`DEVICE_VAR`, else ``auto``."""
    value = os.environ.get(DEVICE_VAR, "auto") or "auto"
    if value not in CHOICES:
        raise DeviceError(f"{DEVICE_VAR}={value!r}: allowed {', '.join(CHOICES)}")
    return value


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def torch_device(setting: str | None = None) -> str:
    """``cpu`` or ``cuda`` for ``setting`` (default: :func:`requested`)."""
    s = setting or requested()
    if s == "cpu":
        return "cpu"
    if cuda_available():
        return "cuda"
    if s == "cuda":
        import torch

        raise DeviceError(f"cluster.device: cuda, but torch {torch.__version__} sees no CUDA "
                          "device here (a CPU build, or no GPU visible); use auto or cpu")
    return "cpu"


def device_env(setting: str) -> dict[str, str]:
    """Environment for a worker or subprocess that should follow ``setting``."""
    env = {DEVICE_VAR: setting}
    if setting == "cpu":
        env["DEVICE"] = "cpu"  # DeePMD (pt backend) reads it at import
    return env
