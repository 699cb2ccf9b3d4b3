"""The ``pfd`` console script: the library's commands (``pfd.cli``) plus ``pfd run``.

``pfd run`` is the one command that starts the Prefect flow, so it is defined here, in the
workflow layer, and added to the library's Typer app; the library itself never imports
``flows`` or ``tasks``. The flow module is imported inside the command only, so
``pfd status``/``fetch``/``report`` still start without Prefect.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from pfd.cli import StoreOpt, _fail, app
from pfd.config import ConfigError
from pfd.preflight import check_config_file
from pfd.run_store import run_key

#: ``pfd run`` without PREFECT_API_URL starts Prefect's API in a subprocess; its first start
#: in a new PREFECT_HOME creates and migrates the database, which took over Prefect's
#: default 20 s on a busy 2-core machine and failed a fresh `make demo` (issue 13, run 2)
EPHEMERAL_TIMEOUT_VAR = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
EPHEMERAL_TIMEOUT_S = 300


@app.command()
def run(config: Path, store: StoreOpt = None,
        workdir: Annotated[Path | None, typer.Option(help="Local scratch directory")] = None,
        ) -> None:
    """Run (or resume) a PFD job in-process, with Prefect's ephemeral API and a Dask cluster."""
    from pfd.retention import RetentionExceeded
    from pfd.run_lease import RunBusy, check_free
    from pfd.run_store import make_context
    from pfd.steps import LabellingStopped
    from pfd.store import StoreError, check_store_url

    try:
        cfg = check_config_file(config)
        if store is not None:
            check_store_url(store)
    except (ConfigError, StoreError) as err:
        _fail(str(err))
        return
    try:
        ctx = make_context(cfg, store, workdir, create=False)
        check_free(ctx.store, ctx.run_id)
    except RunBusy as err:
        _fail(f"pfd run refused: {err}", code=3)
        return
    except StoreError as err:
        _fail(f"pfd run stopped: {err}", code=1)
        return
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault(EPHEMERAL_TIMEOUT_VAR, str(EPHEMERAL_TIMEOUT_S))
    from flows.pfd import pfd_flow

    try:
        result = pfd_flow(str(config.resolve()), store=store,
                          workdir=str(workdir) if workdir else None)
    except RunBusy as err:
        _fail(f"pfd run refused: {err}", code=3)
        return
    except (LabellingStopped, RetentionExceeded, StoreError, ConfigError) as err:
        # expected stops: one message saying why and what to do, not a traceback
        _fail(f"pfd run stopped: {err}", code=1)
        return
    except RuntimeError as err:  # after the expected stops: LabellingStopped is one too
        if "ephemeral Prefect API" not in str(err):
            raise
        _fail(f"pfd run stopped: Prefect's local API server did not answer within "
              f"{os.environ[EPHEMERAL_TIMEOUT_VAR]} s (a first start creates its database); "
              f"nothing of the run was lost: run it again, raise {EPHEMERAL_TIMEOUT_VAR}, or "
              "point PREFECT_API_URL at a running Prefect server", code=1)
        return
    typer.echo(result["report"])
    typer.echo(f"\nrun {result['run_id']} completed; results in {result['store']}"
               f"/{run_key(result['run_id'])}")


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
