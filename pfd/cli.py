"""``pfd`` command line, the library's commands: check, validate, report, status, fetch, ls,
labels.

None of them needs Prefect: ``status`` and ``ls`` read only the store, so they work from
any machine that can reach it, with no Prefect server. ``pfd run`` starts the flow, so it
lives one layer up, in ``flows.cli``, which adds it to this app (the ``pfd`` console
script is ``flows.cli:app``): the library never imports the workflow layers.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pfd import run_store as rs
from pfd.config import ConfigError
from pfd.preflight import check_config_file

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="PFD: Pre-train, Fine-tune, Distill machine-learning force fields.")

StoreOpt = Annotated[str | None, typer.Option(
    "--store", help="Store URL (path or s3://bucket/prefix); default: $PFD_STORE or config")]


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(msg, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command()
def check(config: Path) -> None:
    """Check a config file (fields, structure files, pseudopotentials) and exit."""
    try:
        cfg = check_config_file(config)
    except ConfigError as err:
        _fail(str(err))
        return
    typer.echo(f"{config}: OK (run id {cfg.resolved_run_id}, {len(cfg.stages)} stage(s))")
    from pfd import level_of_theory
    from pfd.structures import config_elements

    for diff in level_of_theory.report(cfg, config_elements(cfg), None)["differences"]:
        typer.echo(f"note: {diff}")


def _store(store: str | None):  # noqa: ANN202
    from pfd.store import StoreError, open_store

    try:
        return open_store(store)
    except StoreError as err:
        _fail(str(err))


def _require_run(st, run_id: str) -> None:  # noqa: ANN001
    if not rs.run_exists(st, run_id):
        runs = rs.list_runs(st)
        _fail(f"no run {run_id!r} in store {st.url} (runs there: {runs or 'none'})")


@app.command()
def status(run_id: str, store: StoreOpt = None) -> None:
    """Per-iteration table of a run, read from the store."""
    from pfd.config import check_run_id
    from pfd.report import status_markdown

    try:
        check_run_id(run_id)
    except ConfigError as err:
        _fail(str(err))
    st = _store(store)
    _require_run(st, run_id)
    info = rs.read_run_info(st, run_id)
    typer.echo(f"run {run_id}: {info.get('status', 'unknown')}")
    flow_run = info.get("flow_run") or {}
    if flow_run.get("id"):
        typer.echo(f"Prefect flow run: {flow_run.get('name')} ({flow_run['id']})")
    typer.echo(status_markdown(rs.status_rows(st, run_id)))
    rec = rs.read_distill_record(st, run_id)
    if rec is not None:
        from pfd.report import distill_markdown

        typer.echo("\ndistillation:")
        typer.echo(distill_markdown(rec))
    calls = rs.force_call_totals(st, run_id)
    if calls:
        typer.echo("\nmodel force calls (MD steps + starts, or frames labelled): " + ", ".join(
            f"{phase} {c['force_calls']:,} "
            + (f"in {c['trajectories']} trajectories " if c["trajectories"] else "")
            + f"({c['atom_steps']:,} atom-steps)" for phase, c in calls.items()))
    for w in info.get("warnings", []):
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW)


def _run_config(st: object, run_id: str, config: Path | None):  # noqa: ANN202
    """The run's stored config; ``config`` (a YAML file) may replace its validation: part."""
    from pfd.config import ValidationSpec, parse_config

    raw = rs.read_config(st, run_id)  # type: ignore[arg-type]
    if config is not None:
        import yaml

        try:
            other = yaml.safe_load(config.read_text()) or {}
            raw["validation"] = ValidationSpec.model_validate(
                other.get("validation") or {}).model_dump(mode="json")
        except (OSError, yaml.YAMLError, ValueError) as err:
            _fail(f"{config}: cannot use its validation section: {err}")
    return parse_config(raw, source=rs.config_key(run_id))


@app.command("validate")
def validate_run(
    run_id: Annotated[str, typer.Argument(help="Run id in the store")],
    store: StoreOpt = None,
    workdir: Annotated[Path | None, typer.Option(help="Local scratch (DFT, model copies)")]
    = None,
    config: Annotated[Path | None, typer.Option(
        help="YAML file whose validation: section replaces the run's stored one")] = None,
    no_dft: Annotated[bool, typer.Option("--no-dft", help="Models only, no labeller runs")]
    = False,
) -> None:
    """Validate a finished run's teacher and student (E-V, vacancy, phonons, diffusion,
    NVE stability, parity) against each other and the run's DFT labeller; report in
    runs/<id>/report/."""
    if run_id.endswith((".yaml", ".yml")) and Path(run_id).is_file():
        _fail(f"{run_id} is a config file: did you mean `pfd check {run_id}`? "
              "(`pfd validate` takes the id of a finished run)")
    from pfd.validate.run import validate_run as run_validation

    st = _store(store)
    _require_run(st, run_id)
    try:
        cfg = _run_config(st, run_id, config)
    except ConfigError as err:
        _fail(str(err))
        return
    ctx = rs.make_context(cfg, st.url, workdir)
    try:
        rec = run_validation(ctx, log=lambda m: typer.secho(m, fg=typer.colors.YELLOW),
                             with_dft=not no_dft)
    except ValueError as err:
        _fail(str(err))
        return
    _print_validation(st.get_json(rec["json"]))
    typer.echo(f"\nreport: {st.uri(rec['html'])}")


def _print_validation(nums: dict) -> None:  # type: ignore[type-arg]
    from pfd.report import markdown_table

    typer.echo(markdown_table(nums["summary"]["header"], nums["summary"]["rows"]))
    for key, err in (nums.get("errors") or {}).items():
        typer.secho(f"failed: {key}: {err.splitlines()[0]}", fg=typer.colors.RED)


@app.command()
def report(run_id: str, store: StoreOpt = None) -> None:
    """Print a run's summary and its validation table, read from the store."""
    st = _store(store)
    base = rs.report_key(run_id)
    _require_run(st, run_id)
    if st.exists(f"{base}/summary.md"):
        typer.echo(st.get_text(f"{base}/summary.md"))
    if st.exists(f"{base}/validation.json"):
        typer.echo("\n## Validation\n")
        _print_validation(st.get_json(f"{base}/validation.json"))
        typer.echo(f"\nfull report: {st.uri(base + '/validation.html')}")
    else:
        typer.echo(f"\nno validation yet: run `pfd validate {run_id}`")


@app.command()
def fetch(
    run_id: Annotated[str, typer.Argument(help="Run id in the store")],
    to: Annotated[Path, typer.Option("--to", help="Directory to copy the results into")],
    what: Annotated[list[str] | None, typer.Option(
        "--what", help="student | teacher | datasets | report (repeatable; default all)")] = None,
    store: StoreOpt = None,
) -> None:
    """Copy a run's student, teacher, datasets and report out of the store (local or S3)."""
    from pfd.fetch import ALL, FetchError, fetch_run
    from pfd.store import StoreError

    try:
        counts = fetch_run(_store(store), run_id, to, tuple(what or ALL))  # type: ignore[arg-type]
    except (FetchError, ConfigError, StoreError) as err:
        _fail(str(err))
        return
    for part, n in counts.items():
        typer.echo(f"{part}: {n} file(s)" + ("" if n else " — not in the run (yet)"))
    typer.echo(f"→ {to} (manifest.json lists every file with its sha256 and source)")


@app.command("ls")
def list_runs(store: StoreOpt = None) -> None:
    """Runs in the store and their state."""
    st = _store(store)
    for r in rs.list_runs(st):
        info = rs.read_run_info(st, r)
        typer.echo(f"{r}\t{info.get('status', 'unknown')}")


labels_app = typer.Typer(no_args_is_help=True,
                         help="The DFT label cache: move paid-for labels between stores.")
app.add_typer(labels_app, name="labels")


@labels_app.command("export")
def labels_export(
    out: Annotated[Path, typer.Argument(help="extxyz file to write")],
    store: StoreOpt = None,
    labeller: Annotated[str | None, typer.Option(
        help="only this labeller fingerprint (a directory under labels/)")] = None,
) -> None:
    """Write every cached DFT label of the store to one extxyz file."""
    from ase.io import write

    from pfd.label.transfer import cached_labels

    frames = cached_labels(_store(store), labeller)
    if not frames:
        _fail(f"no cached labels{f' of labeller {labeller!r}' if labeller else ''} in the store")
    out.parent.mkdir(parents=True, exist_ok=True)
    write(out, frames, format="extxyz")
    fps = sorted({a.info["labeller_fingerprint"] for a in frames})
    typer.echo(f"{len(frames)} labels ({', '.join(fps)}) → {out}")


@labels_app.command("import")
def labels_import(
    file: Annotated[Path, typer.Argument(help="a file written by `pfd labels export`")],
    store: StoreOpt = None,
) -> None:
    """Add exported labels to the store's label cache (never overwrites one)."""
    from ase.io import read

    from pfd.label.transfer import LabelImportError, import_labels

    try:
        frames = read(file, index=":", format="extxyz")
    except (OSError, ValueError, StopIteration) as err:
        _fail(f"{file}: cannot read as extxyz ({err})")
        return
    try:
        res = import_labels(_store(store), frames, source=str(file))
    except LabelImportError as err:
        _fail(str(err))
        return
    typer.echo(f"{file}: {res.summary()}")


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
