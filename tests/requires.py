"""What a missing test dependency does.

The tests' data is in the repository (``tests/data``, see its README), so it is never
"missing": a test that cannot read it fails. A missing program or environment (pw.x,
cp2k, the LAMMPS env) skips the test on a developer's machine, but **fails** it when
``$CI`` is set (CI runs with ``CI=true``), where ``make test`` has installed all of them
and a skip would only hide a test that never ran.

    from requires import missing, needs

    pytestmark = needs(shutil.which("pw.x") is not None, "pw.x not installed")

    @needs(HAVE_CP2K, "cp2k (Debian cp2k + cp2k-data) missing")
    def test_...

    def fixture(...):
        if not ok:
            missing("why")          # skip here, fail in CI

A plain module (imported as ``requires``, like ``procs`` and ``s3server``); its hook is
loaded by ``pytest_plugins`` in ``tests/conftest.py``.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

MARK = "missing_dependency"  # what needs() marks a test with under CI when not ok


def in_ci() -> bool:
    """``$CI`` set to anything but empty, 0, false or no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str) -> NoReturn:
    """A test dependency is absent: skip, or fail under CI."""
    __tracebackhide__ = True  # report the caller's line, not this one
    if in_ci():
        pytest.fail(f"missing test dependency (CI is set, so this fails): {reason}",
                    pytrace=False)
    pytest.skip(reason)


def needs(ok: bool, reason: str) -> pytest.MarkDecorator:
    """``skipif(not ok, reason)``, except that under CI a missing dependency fails."""
    if ok or not in_ci():
        return pytest.mark.skipif(not ok, reason=reason)
    return getattr(pytest.mark, MARK)(reason=reason)


# ------------------------------------------------------------------ the plugin's hooks


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARK}(reason): a dependency of this test is missing and $CI is set: fail "
        "(tests/requires.needs)")


@pytest.hookimpl(tryfirst=True)  # before any fixture of the test is set up
def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers(MARK):
        missing(mark.kwargs["reason"])
