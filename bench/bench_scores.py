"""Benchmark: batch inference of a day's population (`<pipeline>/scores`) in bounded memory, against a bare
`predict_proba` over the same rows.

Data (seeded numpy): `--entities` customers with a feature view of 8 numeric features (a row per customer on each of
the two days before the scored day, TTL 2d), and for each scale of `--rows` a day of that many events in a Delta
table (`raw_events`: customer, event time, an amount and a channel, the model's request features, and an event id
carried into the scores). The model is the spec's whole inference pipeline (imputer, one-hot encoding of the
channel, `HistGradientBoostingClassifier` of 100 iterations), fitted on 50,000 synthetic rows of the same columns,
seeded, so every process fits the same model.

Library: `mlops_assets.core.scoring.batch.score_day`, what a partition of `<pipeline>/scores` runs: the day's events
read from Delta a chunk (`--chunk-rows`) at a time, joined to the view by the training set's point-in-time join,
scored by the pipeline, the scores table's rows (keys, carried id, time, score, decision, version, the view's feature
time, run id) streamed into one Delta commit. Timed from the population's first read to the commit.

Baseline, in a process of its own: the same rows' model inputs prepared beforehand (untimed), then one bare
`pipeline.predict_proba(inputs)` over all of them, timed: the scoring alone, no reading, joining or writing.

Memory: each scale scored in a fresh subprocess, which loads the model and views, resets its peak resident memory
(VmHWM through /proc/self/clear_refs), scores, and reports the peak while scoring (the process's resident memory at
the reset included). Targets: peak at the largest scale <= 1.25x the peak at the smallest; library rows/s >= 0.5x the
baseline's at every scale.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from bench_features import _proc_kib, _reset_peak

DAY = date(2026, 3, 10)
MEMORY_RATIO, RATE_RATIO = 1.25, 0.5
FEATURES = [f"f{i}" for i in range(8)]
CHANNELS = ["online", "pos", "atm"]


def spec(chunk_rows: int) -> Any:
    from mlops_assets.spec import PipelineSpec

    columns = {
        "customer_id": {"dtype": "string"},
        "ts": {"dtype": "datetime"},
        "amount": {"dtype": "float"},
        "channel": {"dtype": "string"},
        "event_id": {"dtype": "int"},
        "label": {"dtype": "int"},
    }
    return PipelineSpec.model_validate(
        {
            "name": "bench",
            "start_date": "2026-03-01",
            "entity": {"name": "customer", "keys": ["customer_id"]},
            "sources": {"events": {"path": "e/{date}.parquet", "event_timestamp": "ts", "columns": columns}},
            "feature_views": {
                "profile": {
                    "source": "events",
                    "ttl": "2d",
                    "function": "mlops_assets.examples.custom_features:channel_mix",
                    "lookback": "2d",
                }
            },
            "request_features": {"amount": {"dtype": "float"}, "channel": {"dtype": "string"}},
            "label": {"source": "events", "column": "label", "timestamp": "ts", "prediction_timestamp": "ts"},
            "model": {
                "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
                "params": {"max_iter": 100},
                "preprocessing": {"scale": False},
                "seed": 1,
            },
            "promotion": {"minimum": 0.0},
            "scoring": {"population": {"source": "events", "carry": ["event_id"]}, "chunk_rows": chunk_rows},
        }
    )


def view_rows(entities: int, seed: int) -> pl.DataFrame:
    """A row per customer on each of the two days before DAY (the latest inside the TTL at any time of DAY)."""
    rng = np.random.default_rng(seed)
    frames = []
    for back in (2, 1):
        start = datetime.combine(DAY - timedelta(days=back), datetime.min.time())
        offsets = rng.integers(0, 86_400_000_000, entities)
        frames.append(
            pl.DataFrame(
                {
                    "customer_id": [f"c{i:07d}" for i in range(entities)],
                    "feature_timestamp": pl.Series(np.datetime64(start, "us") + offsets.astype("timedelta64[us]")),
                    **{f: rng.normal(0, 1, entities) for f in FEATURES},
                }
            )
        )
    return pl.concat(frames).with_columns(
        pl.col("feature_timestamp").cast(pl.Datetime("us")),
        pl.col("feature_timestamp").dt.date().cast(pl.String).alias("partition_date"),
    )


def events(rows: int, entities: int, seed: int, first_id: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    start = np.datetime64(datetime.combine(DAY, datetime.min.time()), "us")
    return pl.DataFrame(
        {
            "customer_id": pl.Series([f"c{i:07d}" for i in range(entities)]).gather(rng.integers(0, entities, rows)),
            "ts": pl.Series(start + rng.integers(0, 86_400_000_000, rows).astype("timedelta64[us]")),
            "amount": rng.lognormal(3.5, 1.2, rows),
            "channel": pl.Series(CHANNELS).gather(rng.integers(0, 3, rows)),
            "event_id": np.arange(first_id, first_id + rows),
            "label": rng.integers(0, 2, rows),
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us")), pl.lit(DAY.isoformat()).alias("partition_date"))


def fitted(scoring_spec: Any) -> Any:
    """The spec's inference pipeline fitted on 50,000 seeded rows (the label a function of the inputs and noise)."""
    from mlops_assets.core.models.modeling import build_pipeline, fit, model_columns

    rng = np.random.default_rng(7)
    n = 50_000
    frame = pl.DataFrame(
        {
            **{f: rng.normal(0, 1, n) for f in FEATURES},
            "amount": rng.lognormal(3.5, 1.2, n),
            "channel": pl.Series(CHANNELS).gather(rng.integers(0, 3, n)),
        }
    )
    logit = frame["f0"] - 0.5 * frame["f1"] + 0.01 * frame["amount"] + (frame["channel"] == "online") * 0.8
    frame = frame.with_columns(label=(logit.to_numpy() + rng.normal(0, 1, n) > 0.5).astype(int))
    columns = model_columns(scoring_spec, frame)
    return fit(build_pipeline(scoring_spec.model, columns), frame, columns, "label")


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh process, printed as one JSON line."""
    from mlops_assets.core.models.modeling import fitted_columns, predict, to_pandas
    from mlops_assets.core.scoring.batch import (
        ScoringModel,
        population,
        population_features,
        score_day,
        view_inputs,
    )

    root = Path(args.root)
    scoring_spec = spec(args.chunk_rows)
    pipeline = fitted(scoring_spec)
    raw = root / f"raw_events_{args.rows}"
    views = view_inputs(scoring_spec, {"profile": pl.scan_delta(str(root / "profile"))}, DAY)
    people = population(scoring_spec, raw, DAY)
    if args.child == "baseline":
        columns = fitted_columns(pipeline)
        parts = [population_features(scoring_spec, chunk, views, False) for chunk in people.chunks()]
        inputs = to_pandas(pl.concat(parts), columns)
        del parts
        t0 = time.perf_counter()
        scores = pipeline.predict_proba(inputs)[:, 1]
        seconds = time.perf_counter() - t0
        # The same model through the library's own call gives the same scores (checked on the first rows).
        head = predict(pipeline, inputs.head(1000), "binary").values
        assert np.allclose(head, scores[:1000])
        print(json.dumps({"seconds": seconds, "rows": len(scores)}))
        return
    model = ScoringModel("1", pipeline, "binary")
    reset = _reset_peak()
    rss = _proc_kib("VmRSS") * 1024
    t0, c0 = time.perf_counter(), time.process_time()
    result = score_day(scoring_spec, root / f"scores_{args.rows}", people, views, model, "bench")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _proc_kib("VmHWM") * 1024 if reset else None
    print(json.dumps({"seconds": seconds, "cpu": cpu, "rows": result.rows, "rss_at_start": rss, "peak": peak}))


def measure(kind: str, rows: int, root: Path, chunk_rows: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, "--root", str(root), "--rows", str(rows)]
    done = subprocess.run([*command, "--chunk-rows", str(chunk_rows)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} at {rows:,} rows failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def prepare(root: Path, scales: list[int], entities: int) -> None:
    from mlops_assets.core.lake import replace_partitions

    replace_partitions(
        root / "profile", view_rows(entities, 1), [(DAY - timedelta(days=d)).isoformat() for d in (2, 1)]
    )
    for rows in scales:
        # Written a million rows at a time (one commit and file each, the day replaced by the first): every scale has
        # files of one size, and generating the largest day needs no more memory than a part of it.
        path, step, written = root / f"raw_events_{rows}", 1_000_000, 0
        import deltalake

        while written < rows:
            part = events(min(step, rows - written), entities, seed=rows + written, first_id=written)
            if written == 0:
                replace_partitions(path, part, [DAY.isoformat()])
            else:
                deltalake.write_deltalake(str(path), part.to_arrow(), mode="append", partition_by=["partition_date"])
            written += part.height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1000000,10000000", help="scales: rows of the scored day, comma-separated")
    parser.add_argument("--entities", type=int, default=200_000)
    parser.add_argument("--chunk-rows", type=int, default=250_000)
    parser.add_argument("--quick", action="store_true", help="100k and 1M rows, 20k entities")
    parser.add_argument("--child", choices=["library", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.rows = int(args.rows)
        child(args)
        return
    if args.quick:
        args.rows, args.entities = "100000,1000000", 20_000
    scales = [int(r) for r in args.rows.split(",")]
    root = Path(tempfile.mkdtemp(prefix="bench_scores_"))
    try:
        t0 = time.perf_counter()
        prepare(root, scales, args.entities)
        print(
            f"data: {args.entities:,} customers, days of {', '.join(f'{r:,}' for r in scales)} events "
            f"({time.perf_counter() - t0:.0f} s to write)",
            flush=True,
        )
        results = {}
        for rows in scales:
            library = measure("library", rows, root, args.chunk_rows)
            baseline = measure("baseline", rows, root, args.chunk_rows)
            assert library["rows"] == baseline["rows"] == rows, (library, baseline)
            results[rows] = (library, baseline)
        print()
        print(
            "| rows | library s (cpu s) | rows/s | bare predict_proba s | rows/s | library / bare | peak GiB scoring |"
        )
        print("|---|---|---|---|---|---|---|")
        for rows, (library, baseline) in results.items():
            lib_rate, bare_rate = rows / library["seconds"], rows / baseline["seconds"]
            peak = library["peak"] / 2**30 if library["peak"] else float("nan")
            print(
                f"| {rows:,} | {library['seconds']:.1f} ({library['cpu']:.1f}) | {lib_rate:,.0f} | "
                f"{baseline['seconds']:.1f} | {bare_rate:,.0f} | **{lib_rate / bare_rate:.2f}x** | {peak:.2f} |"
            )
        print()
        small, large = results[scales[0]][0], results[scales[-1]][0]
        if small["peak"] and large["peak"]:
            ratio = large["peak"] / small["peak"]
            verdict = "PASS" if ratio <= MEMORY_RATIO else "FAIL"
            print(
                f"{verdict} memory: peak at {scales[-1]:,} rows = {ratio:.2f}x the peak at {scales[0]:,} "
                f"(target <= {MEMORY_RATIO}x)"
            )
        else:
            print("SKIPPED memory: /proc/self/clear_refs is not writable here")
        for rows, (library, baseline) in results.items():
            ratio = baseline["seconds"] / library["seconds"]
            verdict = "PASS" if ratio >= RATE_RATIO else "FAIL"
            print(
                f"{verdict} rate at {rows:,} rows: {ratio:.2f}x the rows/s of a bare predict_proba (target >= "
                f"{RATE_RATIO}x)"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
