"""Public event files for the three kinds of problem, from the datasets NannyML ships in its wheel (Apache-2.0):

    python -m mlops_assets.examples.nannyml loans loans.csv [--days 60]   # binary: was the car loan repaid (1.0/0.0)
    python -m mlops_assets.examples.nannyml cars cars.csv [--days 8]      # regression: a used car's price
    python -m mlops_assets.examples.nannyml cards cards.csv [--days 40]   # multiclass: which credit card product

Each row is an event with a text `timestamp`, a unique `id`, the inputs, the outcome and the outputs of NannyML's own
model (`y_pred`, `y_pred_proba…`: `mlops new` leaves those out). No file has a repeating entity id. nannyml's own
dependencies (lightgbm, FLAML, plotly, ...) are not needed to read the files, so the wheel is fetched with
`pip download --no-deps` from the package registry once, into a cache folder, and read as a zip.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from datetime import timedelta
from pathlib import Path

import polars as pl

# 0.13.1 is the release these examples were written against; the data files are part of its wheel.
RELEASE = "0.13.1"
DATASETS = {
    "loans": "synthetic_car_loan_reference",
    "cars": "regression_synthetic_reference",
    "cards": "mc_reference",
}


def cache_folder() -> Path:
    return Path(os.environ.get("MLOPS_EXAMPLE_DATA_CACHE", Path.home() / ".cache" / "mlops-assets-examples"))


def wheel(cache: Path | None = None) -> Path:
    """The nannyml wheel in the cache, downloaded (without its dependencies) the first time.

    Downloaded into a temporary folder and moved into place whole, so concurrent callers never read a partial file.
    """
    cache = cache or cache_folder()
    found = sorted(cache.glob(f"nannyml-{RELEASE}-*.whl"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as folder:
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"nannyml=={RELEASE}", "-d", folder]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"could not download nannyml=={RELEASE} from the package registry:\n{result.stderr}")
        (downloaded,) = Path(folder).glob("*.whl")
        target = cache / downloaded.name
        os.replace(downloaded, target)
    return target


def dataset(name: str, days: int | None = None) -> pl.DataFrame:
    """A data file of the wheel (`synthetic_car_loan_reference`, ... or an example name of DATASETS) as shipped,
    every column as read; with `days`, only the events of its first `days` days."""
    file = DATASETS.get(name, name)
    with zipfile.ZipFile(wheel()) as archive, archive.open(f"nannyml/datasets/data/{file}.csv") as handle:
        frame = pl.read_csv(handle.read(), infer_schema_length=10_000)
    if days is None:
        return frame
    times = pl.col("timestamp").str.to_datetime()
    first = frame.select(times.min()).item()
    return frame.filter(times < first + timedelta(days=days))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("example", choices=sorted(DATASETS))
    parser.add_argument("output", type=Path, help="the event file to write (.csv or .parquet)")
    parser.add_argument("--days", type=int, help="only the first DAYS days of events")
    args = parser.parse_args()
    frame = dataset(args.example, args.days)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(args.output) if args.output.suffix == ".csv" else frame.write_parquet(args.output)
    print(f"wrote {frame.height:,} {args.example} events ({DATASETS[args.example]}) to {args.output}")


if __name__ == "__main__":
    main()
