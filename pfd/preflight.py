"""Checks of a config against this machine, before any work is paid for.

:mod:`pfd.config` is the pure schema: it validates a document and imports nothing else of
pfd, so a stored ``config.json`` re-parses anywhere (``pfd validate RUN`` on another
machine, the flow's reload). What needs the filesystem, the engines or the model backends
lives here: structure files load, every element has what the labeller needs, the
foundation model exists and knows every element, the store URL is usable. ``pfd check``
and ``pfd run`` call :func:`preflight`; every problem is one :class:`ConfigError` line
naming the field, the value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path

from pfd.config import ConfigError, PFDConfig, load_config, parse_config, redact

__all__ = ["check_config", "check_config_file", "preflight"]


def preflight(cfg: PFDConfig) -> PFDConfig:
    """Run every environment check on ``cfg``; returns it with its run id resolved."""
    _check_store(cfg.store)
    from pfd.structures import config_elements

    elements = config_elements(cfg)
    from pfd.label.registry import LabellerConfigError, check_labeller

    try:
        check_labeller(cfg.labeller, elements)
    except LabellerConfigError as err:
        raise ConfigError(f"labeller.{err.field}: {err}") from None
    _check_foundation(cfg, elements)
    _check_jobqueues(cfg)
    _check_device(cfg)
    return cfg.model_copy(update={"run_id": cfg.resolved_run_id})


def _check_device(cfg: PFDConfig) -> None:
    """``cluster.device: cuda`` on a local cluster needs a GPU torch can see here (batch
    jobs and a remote scheduler run elsewhere: their nodes are not this machine)."""
    c = cfg.cluster
    if c.device != "cuda" or c.jobqueue is not None or c.address is not None:
        return
    from pfd.device import DeviceError, torch_device

    try:
        torch_device("cuda")
    except DeviceError as err:
        raise ConfigError(str(err)) from None


def _check_jobqueues(cfg: PFDConfig) -> None:
    """The batch system is here and accepts the worker jobs the config asks for."""
    from pfd.jobqueue import check_submittable

    for name in ("jobqueue", "dft_jobqueue"):
        spec = getattr(cfg.cluster, name)
        if spec is not None:
            check_submittable(spec, where=f"cluster.{name}")


def check_config_file(path: str | Path) -> PFDConfig:
    """Load a config file and run :func:`preflight` on it (``pfd check``, ``pfd run``)."""
    return preflight(load_config(path))


def check_config(raw: dict, source: str = "<inline>", base: Path | None = None) -> PFDConfig:
    """Parse a mapping and run :func:`preflight` on it."""
    return preflight(parse_config(raw, source=source, base=base))


def _check_store(url: str) -> None:
    from pfd.store import StoreError, check_store_url

    try:
        check_store_url(url)
    except StoreError as err:
        raise ConfigError(redact(f"store: {err}")) from None


def _check_deepmd_checkpoint(cfg: PFDConfig, elements: list[str]) -> None:
    """The DPA checkpoint exists, its head choice is valid and it knows every element."""
    from ase import Atoms

    from pfd.models.deepmd_finetune import check_elements, read_checkpoint, resolve_head

    ft = cfg.finetune
    try:
        info = read_checkpoint(str(ft.checkpoint))
        resolve_head(info, ft.model_branch)
        check_elements(info, [Atoms(elements)], ft.model_branch)
    except (FileNotFoundError, ValueError) as err:
        msg = str(err)
        raise ConfigError(msg if msg.startswith("finetune") else f"finetune.checkpoint: {msg}"
                          ) from None


def _check_foundation(cfg: PFDConfig, elements: list[str]) -> None:
    """A fine-tune cannot teach a foundation model an element its type map lacks: the
    error would come from inside the trainer, after the initial DFT set was paid for."""
    if cfg.finetune.backend == "deepmd":
        _check_deepmd_checkpoint(cfg, elements)
        return
    from pfd.models.type_maps import foundation_type_map

    try:
        known = foundation_type_map(cfg.finetune.backend, cfg.finetune.foundation)
    except (FileNotFoundError, ValueError) as err:
        msg = str(err)
        raise ConfigError(msg if msg.startswith("finetune") else f"finetune.foundation: {msg}"
                          ) from None
    if known is None:
        return
    missing = sorted(set(elements) - set(known))
    if missing:
        raise ConfigError(
            f"finetune.foundation: {cfg.finetune.foundation!r} has no element(s) {missing} "
            f"in its type map, which the structures need; it knows {len(known)} elements: "
            f"{' '.join(sorted(known))}")
