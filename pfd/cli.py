"""``pfd`` command line: run, validate, status, ls.

``status`` and ``ls`` read only the store, so they work from any machine that can reach
it, with no Prefect server.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from pfd.config import ConfigError, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="PFD: Pre-train, Fine-tune, Distill machine-learning force fields.")

StoreOpt = Annotated[str | None, typer.Option(
    "--store", help="Store URL (path or s3://bucket/prefix); default: $PFD_STORE or config")]


def _fail(msg: str) -> None:
    typer.secho(msg, fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command()
def validate(config: Path) -> None:
    """Check a config file (fields, structure files, pseudopotentials) and exit."""
    try:
        cfg = load_config(config)
    except ConfigError as err:
        _fail(str(err))
        return
    typer.echo(f"{config}: OK (run id {cfg.resolved_run_id}, {len(cfg.stages)} stage(s))")


@app.command()
def run(config: Path, store: StoreOpt = None,
        workdir: Annotated[Path | None, typer.Option(help="Local scratch directory")] = None,
        ) -> None:
    """Run (or resume) a PFD job in-process, with Prefect's ephemeral API and a Dask cluster."""
    try:
        load_config(config)
    except ConfigError as err:
        _fail(str(err))
        return
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.pfd import pfd_flow

    result = pfd_flow(str(config.resolve()), store=store,
                      workdir=str(workdir) if workdir else None)
    typer.echo(result["report"])
    typer.echo(f"\nrun {result['run_id']} completed; results in {result['store']}"
               f"/runs/{result['run_id']}")


def _store(store: str | None):  # noqa: ANN202
    from pfd.store import open_store

    return open_store(store)


@app.command()
def status(run_id: str, store: StoreOpt = None) -> None:
    """Per-iteration table of a run, read from the store."""
    from pfd.report import status_markdown
    from pfd.steps import status_rows

    st = _store(store)
    if not st.exists(f"runs/{run_id}/config.json"):
        runs = sorted({k.split("/")[1] for k in st.list("runs/")})
        _fail(f"no run {run_id!r} in store {st.url} (runs there: {runs or 'none'})")
    info = st.get_json(f"runs/{run_id}/run.json") if st.exists(f"runs/{run_id}/run.json") else {}
    typer.echo(f"run {run_id}: {info.get('status', 'unknown')}")
    typer.echo(status_markdown(status_rows(st, run_id)))
    if st.exists(f"runs/{run_id}/distill/record.json"):
        from pfd.report import fmt, markdown_table

        rec = st.get_json(f"runs/{run_id}/distill/record.json")
        typer.echo("\ndistillation:")
        typer.echo(markdown_table(
            ["model", "tested on", "frames", "E RMSE meV/atom", "F RMSE eV/Å"],
            [[r["model"], r["data"], fmt(r["n_frames"]), fmt(r["energy_rmse_meV_atom"]),
              fmt(r["force_rmse_eV_A"])] for r in rec["table"]]))
    for w in info.get("warnings", []):
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW)


@app.command("ls")
def list_runs(store: StoreOpt = None) -> None:
    """Runs in the store and their state."""
    st = _store(store)
    runs = sorted({k.split("/")[1] for k in st.list("runs/")})
    for r in runs:
        info = st.get_json(f"runs/{r}/run.json") if st.exists(f"runs/{r}/run.json") else {}
        typer.echo(f"{r}\t{info.get('status', 'unknown')}")


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
