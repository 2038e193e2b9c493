"""Benchmark: the prediction service over HTTP (`mlops serve`), single requests and batches.

Setup (seeded, in a temporary data folder): the built-in fraud spec, `--entities` customers with one online row
per feature view in the SQLite online store, and a model of the spec's estimator trained on synthetic rows with
the real feature columns, registered in a local MLflow and made champion. Both servers run as separate processes
with one worker each, started from the same interpreter, and are driven by one keep-alive HTTP client:

- **predict** (the library: validation, online lookup of three views, scoring, prediction log) against the
  **baseline**, a minimal BentoML endpoint that scores the same model on the same feature vector passed in whole
  (bench/baseline_service.py). Requests alternate between the two in blocks, so both see the same machine.
  Target: p50 no more than 1.5x the baseline's; p99 reported.
- **predict_batch**, 100 requests per call: rows/s against the model's in-process `predict_proba` on the same
  rows (the ceiling: no HTTP, no lookups, no logging).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from mlops_assets.core.features.online import SQLiteOnlineStore, sync_view
from mlops_assets.core.features.views import FEATURE_TIMESTAMP
from mlops_assets.core.lake import PARTITION_COLUMN
from mlops_assets.core.models.modeling import Columns, build_pipeline, fit
from mlops_assets.core.models.registry import ModelRegistry
from mlops_assets.spec import load_specs

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare(folder: Path, entities: int) -> tuple[Columns, Any, list[dict[str, Any]], list[dict[str, Any]], str]:
    """Online rows for every view and a champion trained on synthetic rows.

    Returns the model's columns, the model, one request per entity, the full feature vector of each (request
    fields + online rows: what the baseline is sent) and the model's URI.
    """
    (spec,) = load_specs()
    assert spec.model is not None
    rng = np.random.default_rng(0)
    ids = [f"c{i:06d}" for i in range(entities)]
    now = datetime.now(UTC).replace(tzinfo=None)
    store = SQLiteOnlineStore(folder / "online.db")
    names: list[str] = []
    online = pl.DataFrame({"customer_id": ids})
    for view_name, view in spec.feature_views.items():
        features = view.feature_names() or ["online_share_7d"]
        names += features
        frame = pl.DataFrame(
            {
                "customer_id": ids,
                FEATURE_TIMESTAMP: [now - timedelta(hours=1)] * entities,
                **{f: rng.gamma(2.0, 10.0, entities) for f in features},
            }
        ).with_columns(pl.lit(now.date().isoformat()).alias(PARTITION_COLUMN))
        sync_view(store, spec.name, view_name, frame.lazy(), ["customer_id"])
        online = online.join(frame.select("customer_id", *features), on="customer_id")
    requests = pl.DataFrame(
        {
            "customer_id": ids,
            "amount": rng.gamma(2.0, 40.0, entities),
            "merchant_category": rng.choice(["grocery", "electronics", "travel"], entities),
            "channel": rng.choice(["online", "pos", "atm"], entities),
            "country": rng.choice(["FR", "DE", "US"], entities),
        }
    )
    columns = Columns(["amount", *names], ["merchant_category", "channel", "country"])
    train = requests.with_columns(
        *[pl.Series(n, rng.gamma(2.0, 10.0, entities)) for n in names],
        pl.Series("is_fraud", (rng.uniform(size=entities) < 0.1).astype(int)),
    )
    model = fit(build_pipeline(spec.model, columns), train, columns, "is_fraud")
    registry = ModelRegistry(f"sqlite:///{folder / 'mlflow.db'}", folder / "mlartifacts")
    example = train.select(columns.all).head(5).to_pandas()
    logged = registry.log_candidate(
        spec.name, model, example, params={}, metrics={}, tags={}, artifacts={}, required={"amount"}
    )
    registry.promote(spec.name, logged.version, "benchmark", "bench")
    vectors = requests.join(online, on="customer_id", maintain_order="left").select(columns.all)
    return columns, model, requests.to_dicts(), vectors.to_dicts(), logged.model_uri


def start(command: list[str], env: dict[str, str], log: Path, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=log.parent)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.5)
    raise RuntimeError(f"server on {port} never became ready:\n{log.read_text()[-3000:]}")


class Client:
    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: Any) -> tuple[float, Any]:
        payload = json.dumps(body)
        started = time.perf_counter()
        self.connection.request("POST", path, payload, {"content-type": "application/json"})
        response = self.connection.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}: {data[:500]!r}")
        return elapsed, json.loads(data)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=2_000, help="single requests per server")
    parser.add_argument("--batches", type=int, default=50, help="predict_batch calls of 100 requests")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    try:
        run(folder, args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def service_env(folder: Path) -> dict[str, str]:
    """The environment of a benchmarked server: the prepared folder's data, registry and BentoML home, no API key."""
    env = {
        **os.environ,
        "MLOPS_DATA_DIR": str(folder),
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "BENTOML_HOME": str(folder / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
    }
    env.pop("MLOPS_API_KEY", None)
    return env


def run(folder: Path, args: argparse.Namespace) -> None:
    columns, model, requests, vectors, model_uri = prepare(folder, args.entities)
    env = {**service_env(folder), "BASELINE_MODEL_URI": model_uri}
    ours, base = free_port(), free_port()
    mlops = [sys.executable, "-m", "mlops_assets.cli", "--data-dir", str(folder), "serve", "fraud", "--from-source"]
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    servers = [
        start([*mlops, "--port", str(ours)], env, folder / "ours.log", ours),
        start(
            [bentoml, "serve", "baseline_service:Baseline", "--port", str(base), "--working-dir", str(HERE)],
            env,
            folder / "baseline.log",
            base,
        ),
    ]
    try:
        measure(Client(ours), Client(base), columns, model, requests, vectors, args)
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)


def measure(
    ours: Client,
    base: Client,
    columns: Columns,
    model: Any,
    rows: list[dict[str, Any]],
    vectors: list[dict[str, Any]],
    args: Any,
) -> None:
    rng = np.random.default_rng(1)
    picks = rng.integers(0, len(rows), args.requests)
    # Warm both (the first requests load code paths and caches), and check that they give the same score.
    for i in picks[:50]:
        _, answer = ours.post("/predict", {"request": rows[i]})
        _, score = base.post("/predict", {"features": vectors[i]})
        assert not answer["degraded"] and score == answer["score"], (score, answer)
    lib_times, base_times = [], []
    for block in range(0, len(picks), 50):
        for i in picks[block : block + 50]:
            lib_times.append(ours.post("/predict", {"request": rows[i]})[0])
        for i in picks[block : block + 50]:
            base_times.append(base.post("/predict", {"features": vectors[i]})[0])
    lib_p50, base_p50 = statistics.median(lib_times) * 1000, statistics.median(base_times) * 1000
    ratio = lib_p50 / base_p50
    print(f"\npredict, one request at a time ({len(picks)} each, interleaved in blocks of 50)")
    print(f"{'variant':<28} {'p50 ms':>8} {'p99 ms':>8}  ratio p50")
    print(f"{'predict (lookup+score+log)':<28} {lib_p50:>8.2f} {pct(lib_times, 99):>8.2f}  {ratio:.2f}x")
    print(f"{'baseline (features passed)':<28} {base_p50:>8.2f} {pct(base_times, 99):>8.2f}  1.00x")
    print(f"{'PASS' if ratio <= 1.5 else 'FAIL'}: predict p50 {ratio:.2f}x the baseline's (target <= 1.5x)")

    batches = [rng.integers(0, len(rows), 100) for _ in range(args.batches)]
    started = time.perf_counter()
    for batch in batches:
        ours.post("/predict_batch", {"requests": [rows[i] for i in batch]})
    http_rate = 100 * len(batches) / (time.perf_counter() - started)
    frames = [pd.DataFrame([vectors[i] for i in batch])[columns.all] for batch in batches]
    started = time.perf_counter()
    for frame in frames:
        model.predict_proba(frame)
    local_rate = 100 * len(batches) / (time.perf_counter() - started)
    print(f"\npredict_batch, 100 requests per call ({len(batches)} calls)")
    print(f"{'predict_batch over HTTP':<28} {http_rate:>10,.0f} rows/s  {http_rate / local_rate:.2f}x")
    print(f"{'in-process predict_proba':<28} {local_rate:>10,.0f} rows/s  1.00x")


if __name__ == "__main__":
    main()
