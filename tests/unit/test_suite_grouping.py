"""The suite's own scheduling: tests of one xdist group run on one worker (pyproject's `--dist loadgroup`), so a
module or session fixture they share is built once. pytest 9.2 with pytest-xdist 3.8 silently spread the groups."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

GROUPED = """
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("together")


def test_runs():
    Path(__file__).with_suffix(".worker").write_text(os.environ["PYTEST_XDIST_WORKER"])
"""


def test_an_xdist_group_runs_on_one_worker(tmp_path: Path) -> None:
    names = [f"test_grouped_{i}" for i in range(4)]
    for name in names:
        (tmp_path / f"{name}.py").write_text(GROUPED)
    for i in range(4):  # ungrouped tests beside them, for the other worker
        (tmp_path / f"test_free_{i}.py").write_text("def test_free():\n    pass\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    workers = {(tmp_path / f"{name}.worker").read_text() for name in names}
    assert len(workers) == 1, workers
