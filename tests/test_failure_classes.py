"""Failures are retried or not by their cause, not by their Python type.

Final: bad input, data that fails its checksum, labelling over its failure limit, a run
another flow holds. Everything else a task raises while fetching, loading or running on
a worker is retried: the demo once died for good on a ``ValueError`` ("not a valid
pretrained model name") that was a race between two workers, not bad input.
"""

from __future__ import annotations

import pytest
from prefect import flow, task
from prefect.testing.utilities import prefect_test_harness

from flows.cli import EPHEMERAL_TIMEOUT_S
from pfd.config import ConfigError
from pfd.label.registry import LabellerConfigError
from pfd.run_lease import RunBusy
from pfd.steps import LabellingStopped
from pfd.store import IntegrityError, NotFoundInStore, StoreError
from tasks.steps import TASK_OPTIONS, classify_failure

FINAL = [ConfigError("stages.0.groups.0.timestep_fs: too long"),
         LabellerConfigError("pseudopotentials", "no pseudopotential for Si"),
         LabellingStopped("labelling stopped: 5 of 10 frames failed"),
         IntegrityError("sha256 mismatch"), RunBusy("run x is already being run")]
TRANSIENT = [ValueError("Not a valid pretrained model name"),
             FileNotFoundError("checkpoint_best.pth"), KeyError("model_file"),
             TypeError("NoneType"), OSError(5, "Input/output error"),
             NotFoundInStore("not in store: runs/x/models/m/pfd_model.json"),
             StoreError("connection reset"), RuntimeError("worker lost"),
             ConnectionError("reset by peer")]


@pytest.mark.parametrize("exc", FINAL, ids=lambda e: type(e).__name__)
def test_final_causes_are_not_retried(exc: BaseException) -> None:
    retry, why = classify_failure(exc)
    assert retry is False and why


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_everything_else_is_retried(exc: BaseException) -> None:
    assert classify_failure(exc)[0] is True


@pytest.mark.slow
def test_prefect_retries_a_transient_value_error_and_not_bad_input() -> None:
    """Through Prefect itself: the task options every pfd task uses."""
    calls = {"transient": 0, "final": 0}
    opts = {k: v for k, v in TASK_OPTIONS.items() if k not in ("cache_policy",
                                                                "persist_result")}
    opts["retry_delay_seconds"] = 0

    @task(name="flaky", **opts)
    def flaky() -> str:
        calls["transient"] += 1
        if calls["transient"] < 3:
            raise ValueError("Not a valid pretrained model name")  # the race, twice
        return "ok"

    @task(name="bad-input", **opts)
    def bad_input() -> None:
        calls["final"] += 1
        raise ConfigError("finetune.foundation: '7net-99' is not a pretrained name")

    @flow
    def both() -> str:
        out = flaky()
        with pytest.raises(ConfigError):
            bad_input()
        return out

    # The harness's own 30 s start-up budget failed CI on a loaded machine; the CLI's is
    # the one a user's run gets.
    with prefect_test_harness(server_startup_timeout=EPHEMERAL_TIMEOUT_S):
        assert both() == "ok"
    assert calls == {"transient": 3, "final": 1}
