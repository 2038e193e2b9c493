"""Public datasets the tests run on, read from the PyPI packages that ship them (never generated here): NannyML's
car loans (binary, the outcome `repaid` stored as 1.0/0.0 floats), used car prices (regression) and credit card
products (multiclass, the outcome a string); see mlops_assets/examples/nannyml.py."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from mlops_assets.examples.nannyml import dataset


def nannyml_csv(name: str, days: int | None = None) -> pl.DataFrame:
    """One of the wheel's data files (`synthetic_car_loan_reference`, ...) as a frame, every column as shipped."""
    return dataset(name, days)


def write_csv(frame: pl.DataFrame, path: Path) -> Path:
    """The frame as a CSV event file, the way a user would hand one over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(path)
    return path
