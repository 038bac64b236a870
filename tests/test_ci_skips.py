"""The CI skip guard (tests/ci_skips.py): under CI=true a skip fails with its reason unless allow-listed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

SKIPPING = '''
import pytest

@pytest.fixture
def browser():
    pytest.skip("Chromium not found on PATH")

def test_in_the_body():
    pytest.skip("mpirun not found")

def test_in_a_fixture(browser):
    pass

def test_runs():
    assert True

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    assert False
'''


def _pytest(root: Path, ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", str(root)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def _tree(tmp_path: Path) -> Path:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["ci_skips"]\n')
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_claims.py").write_text(SKIPPING)
    (tmp_path / "tests" / "test_gpu.py").write_text("import pytest\n\ndef test_cuda():\n    pytest.skip('needs a CUDA GPU')\n")
    (tmp_path / "tests" / "test_extra.py").write_text("import pytest\n\npytest.importorskip('no_such_module_here')\n\n"
                                                     "def test_x():\n    pass\n")
    return tmp_path


def test_outside_ci_skips_are_skips(tmp_path):
    done = _pytest(_tree(tmp_path), ci=None)
    assert done.returncode == 0, done.stdout
    assert "1 passed, 4 skipped, 1 xfailed" in done.stdout


def test_in_ci_a_skip_fails_with_its_reason_unless_allowed(tmp_path):
    done = _pytest(_tree(tmp_path), ci="true")
    out = done.stdout
    assert done.returncode != 0
    assert "CI=true: tests/test_claims.py::test_in_the_body skipped (mpirun not found)" in out
    assert "CI=true: tests/test_claims.py::test_in_a_fixture skipped (Chromium not found on PATH)" in out
    assert "CI=true: tests/test_extra.py skipped" in out and "no_such_module_here" in out
    # allow-listed (tests/test_gpu.py, with why) still skips; an expected failure is not a skip
    assert "CI=true: tests/test_gpu.py" not in out
    assert "1 failed, 1 passed, 2 skipped, 1 xfailed, 1 error" in out, out


def test_every_allowed_skip_names_a_test_file_and_says_why():
    from ci_skips import ALLOWED

    for prefix, why in ALLOWED.items():
        assert (HERE.parent / prefix.split("::")[0]).is_file(), prefix
        assert len(why.split()) >= 5, prefix
