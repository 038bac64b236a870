"""In CI (`CI=true`, as `.ci/run` sets it) a skipped test fails, with the reason it skipped, unless it is listed in
`ALLOWED` below with why. The README and bench/results claim these checks as run; a missing browser, DeepSpeed
build or Open MPI install must not turn into a green run where they never ran. Loaded by conftest.py."""

from __future__ import annotations

import os

import pytest

# Test id prefixes (as pytest prints them, from the repository root) that may skip in CI, and why.
ALLOWED = {
    "tests/test_gpu.py": "needs a CUDA GPU, which CI has none of; bench/gpu.sh runs it on a GPU machine "
                         "(bench/results/train_gpu_tests.txt)",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def allowed(nodeid: str) -> bool:
    return any(nodeid == prefix or nodeid.startswith(prefix + "::") or nodeid.startswith(prefix + "/")
               for prefix in ALLOWED)


def _reason(longrepr) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (file, line, "Skipped: why")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail(report, nodeid: str) -> None:
    report.outcome = "failed"
    report.longrepr = (f"CI=true: {nodeid} skipped ({_reason(report.longrepr)}). This check is claimed as run: "
                       f"install what it needs (.ci/run), or list it in ALLOWED in tests/ci_skips.py with why.")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and in_ci() and not allowed(item.nodeid):
        _fail(report, item.nodeid)


_SKIPPED_FILES: list[str] = []
"""Files skipped whole at collection (a module-level importorskip), reported at the end: failing their collection
would stop the whole run."""


def pytest_collectreport(report):
    if report.skipped and in_ci() and not allowed(report.nodeid):
        _SKIPPED_FILES.append(f"CI=true: {report.nodeid} skipped ({_reason(report.longrepr)}). This check is claimed as "
                              f"run: install what it needs (.ci/run), or list it in ALLOWED in tests/ci_skips.py with why.")


def pytest_terminal_summary(terminalreporter):
    for line in _SKIPPED_FILES:
        terminalreporter.write_line(line, red=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED_FILES and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
