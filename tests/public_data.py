"""Public datasets the tests run on, read from the PyPI packages that ship them (never generated here).

NannyML's wheel carries three monitoring datasets with timestamps, one per kind of supervised problem: car loans
(binary, the outcome `repaid` stored as 1.0/0.0 floats), used car prices (regression) and credit card products
(multiclass, the outcome a string). nannyml's own dependencies (lightgbm, FLAML, plotly, ...) are not needed to read
them, so the wheel is fetched with `pip download --no-deps` from the package registry and its files are read from
the zip, once per machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import polars as pl
from filelock import FileLock

# 0.13.1 is the release whose data files these tests were written against; the files are part of the wheel.
NANNYML = "nannyml==0.13.1"
CACHE = Path(os.environ.get("MLOPS_TEST_DATA_CACHE", Path.home() / ".cache" / "mlops-assets-test-data"))


def nannyml_wheel() -> Path:
    """The nannyml wheel in the cache, downloaded (without its dependencies) the first time."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with FileLock(str(CACHE / ".download.lock")):  # two pytest-xdist workers may ask at once
        wheels = sorted(CACHE.glob("nannyml-0.13.1-*.whl"))
        if not wheels:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", NANNYML, "-d", str(CACHE)],
                check=True,
                capture_output=True,
            )
            wheels = sorted(CACHE.glob("nannyml-0.13.1-*.whl"))
    return wheels[0]


def nannyml_csv(name: str) -> pl.DataFrame:
    """One of the wheel's data files (`synthetic_car_loan_reference`, ...) as a frame, every column as shipped."""
    with zipfile.ZipFile(nannyml_wheel()) as wheel, wheel.open(f"nannyml/datasets/data/{name}.csv") as file:
        return pl.read_csv(file.read(), infer_schema_length=10_000)


def write_csv(frame: pl.DataFrame, path: Path) -> Path:
    """The frame as a CSV event file, the way a user would hand one over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(path)
    return path
