"""Benchmark: the prediction service over HTTP (`mlops serve`), single requests, concurrent clients and batches.

Setup (seeded, in temporary data folders): the built-in fraud spec, `--entities` customers with one online row per
feature view in the SQLite online store, and models of the spec's estimator and preprocessing trained on synthetic
rows with the real feature columns, registered in a local MLflow: a champion alone in one folder, a champion and a
challenger (in shadow, as the spec's rollout says) in another. Every server is its own process with one worker,
started from the same interpreter:

- **ours**: `mlops serve fraud --from-source`, champion only: request validation from the spec, three online
  lookups, scoring (the compiled preprocessing and the pipeline's estimator), the prediction log, our metrics.
- **ours + shadow**: the same with a challenger, which scores the same vectors off the request path.
- **constant** (the yardstick of the targets): a bare BentoML endpoint taking the same request body and returning
  a constant (bench/baseline_service.py `Constant`): what BentoML itself costs per request.
- **pipeline endpoint** (the old baseline, for information): a bare BentoML endpoint scoring the champion on the
  feature vector passed in whole, as a one-row pandas frame through the fitted pipeline (`Baseline`), with
  OMP_NUM_THREADS=1 as a careful user would set.

Phases, all servers measured in the same run:
1. One keep-alive client, requests interleaved between the servers in blocks of 50: p50 and p99.
   Targets: ours and ours + shadow p50 <= 2x and p99 <= 3x the constant endpoint's.
2. `--clients` concurrent clients (closed loop, aiohttp) for `--seconds` per server, two rounds interleaved, the
   better kept: requests/s. Target: ours and ours + shadow >= 0.5x the constant endpoint's.
3. `/predict_batch` of 100 requests per call: rows/s over HTTP against the champion scored in-process on the same
   rows' feature vectors (`predict_proba` of the fitted pipeline on a pandas frame, what a batch script does).
   Target >= 0.3x.
Every shadow score logged is checked equal to the challenger's own score of the logged feature vector.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import polars as pl

from mlops_assets.core.features.online import SQLiteOnlineStore, sync_view
from mlops_assets.core.features.views import FEATURE_TIMESTAMP
from mlops_assets.core.lake import PARTITION_COLUMN
from mlops_assets.core.models.compiled import fast_model
from mlops_assets.core.models.modeling import Columns, build_pipeline, fit, rows_to_pandas
from mlops_assets.core.models.registry import ModelRegistry
from mlops_assets.core.serving.prediction_log import log_folder
from mlops_assets.spec import load_specs

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Prepared:
    columns: Columns
    model: Any  # the champion's fitted pipeline
    requests: list[dict[str, Any]]  # one request per entity
    vectors: list[dict[str, Any]]  # each request's full feature vector (request fields + online rows)
    model_uri: str
    challenger: Any = None  # the challenger's fitted pipeline, when one was registered


def prepare(folder: Path, entities: int, challenger: bool = False) -> Prepared:
    """Online rows for every view and a champion (and, if asked, a challenger) trained on synthetic rows."""
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
    registry = ModelRegistry(f"sqlite:///{folder / 'mlflow.db'}", folder / "mlartifacts")
    example = train.select(columns.all).head(5).to_pandas()

    def register(model_spec: Any) -> tuple[Any, Any]:
        model = fit(build_pipeline(model_spec, columns), train, columns, "is_fraud")
        logged = registry.log_candidate(
            spec.name, model, example, params={}, metrics={}, tags={}, artifacts={}, required={"amount"}
        )
        return model, logged

    model, logged = register(spec.model)
    registry.promote(spec.name, logged.version, "benchmark", "bench")
    second = None
    if challenger:
        second, logged_second = register(spec.model.model_copy(update={"seed": spec.model.seed + 1}))
        registry.set_challenger(spec.name, logged_second.version)
    vectors = requests.join(online, on="customer_id", maintain_order="left").select(columns.all)
    return Prepared(columns, model, requests.to_dicts(), vectors.to_dicts(), logged.model_uri, second)


def start(command: list[str], env: dict[str, str], log: Path, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=log.parent)
    deadline = time.monotonic() + 300
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
    """One keep-alive connection; reconnects once when the server closed it while idle (uvicorn does after its
    keep-alive timeout), which is not an error of the request."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: Any) -> tuple[float, Any]:
        payload = json.dumps(body)
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                self.connection.request("POST", path, payload, {"content-type": "application/json"})
                response = self.connection.getresponse()
                data = response.read()
                break
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                self.connection.close()
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt == 2:
                    raise
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
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients of the throughput phase")
    parser.add_argument("--seconds", type=float, default=8.0, help="per server and round of the throughput phase")
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


@dataclass
class Server:
    name: str
    client: Client
    url: str
    body: Any  # request index -> the body this server is sent


def run(folder: Path, args: argparse.Namespace) -> None:
    alone, shadowed = folder / "alone", folder / "shadowed"
    alone.mkdir()
    shadowed.mkdir()
    champion = prepare(alone, args.entities)
    with_challenger = prepare(shadowed, args.entities, challenger=True)
    mlops = [sys.executable, "-m", "mlops_assets.cli", "serve", "fraud", "--from-source"]
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    ports = {name: free_port() for name in ("ours", "ours + shadow", "constant", "pipeline endpoint")}
    baseline_env = {**service_env(alone), "BASELINE_MODEL_URI": champion.model_uri, "OMP_NUM_THREADS": "1"}
    commands = {
        "ours": ([*mlops, "--port", str(ports["ours"])], service_env(alone), alone),
        "ours + shadow": ([*mlops, "--port", str(ports["ours + shadow"])], service_env(shadowed), shadowed),
        "constant": (
            [
                bentoml,
                "serve",
                "baseline_service:Constant",
                "--port",
                str(ports["constant"]),
                "--working-dir",
                str(HERE),
            ],
            service_env(alone),
            alone,
        ),
        "pipeline endpoint": (
            [
                bentoml,
                "serve",
                "baseline_service:Baseline",
                "--port",
                str(ports["pipeline endpoint"]),
                "--working-dir",
                str(HERE),
            ],
            baseline_env,
            alone,
        ),
    }
    processes = []
    try:
        for name, (command, env, data) in commands.items():
            processes.append(start(command, env, data / f"{name.replace(' ', '_')}.log", ports[name]))
        request = lambda i: {"request": champion.requests[i]}  # noqa: E731
        servers = [
            Server("ours", Client(ports["ours"]), "/predict", request),
            Server("ours + shadow", Client(ports["ours + shadow"]), "/predict", request),
            Server("constant", Client(ports["constant"]), "/predict", request),
            Server(
                "pipeline endpoint",
                Client(ports["pipeline endpoint"]),
                "/predict",
                lambda i: {"features": champion.vectors[i]},
            ),
        ]
        measure(servers, ports, champion, args)
        check_shadow(shadowed, with_challenger)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


def measure(servers: list[Server], ports: dict[str, int], champion: Prepared, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(1)
    picks = rng.integers(0, len(champion.requests), args.requests)
    # Warm every server (the first requests load code paths and caches); ours answer the pipeline's own score.
    for i in picks[:100]:
        answers = {s.name: s.client.post(s.url, s.body(i))[1] for s in servers}
        assert not answers["ours"]["degraded"] and answers["pipeline endpoint"] == answers["ours"]["score"], answers
    times: dict[str, list[float]] = {s.name: [] for s in servers}
    for block in range(0, len(picks), 50):
        for server in servers:
            for i in picks[block : block + 50]:
                times[server.name].append(server.client.post(server.url, server.body(int(i)))[0])
    constant = times["constant"]
    c50, c99 = pct(constant, 50), pct(constant, 99)
    print(f"\npredict, one client, keep-alive ({len(picks)} requests each, interleaved in blocks of 50)")
    print(f"{'server':<20} {'p50 ms':>8} {'p99 ms':>8}  {'p50 / constant':>15} {'p99 / constant':>15}")
    for name, values in times.items():
        p50, p99 = pct(values, 50), pct(values, 99)
        print(f"{name:<20} {p50:>8.2f} {p99:>8.2f}  {p50 / c50:>14.2f}x {p99 / c99:>14.2f}x")
    for name in ("ours", "ours + shadow"):
        r50, r99 = pct(times[name], 50) / c50, pct(times[name], 99) / c99
        print(
            f"{'PASS' if r50 <= 2 else 'FAIL'}: {name} /predict p50 {r50:.2f}x the constant endpoint's (target <= 2x)"
        )
        print(
            f"{'PASS' if r99 <= 3 else 'FAIL'}: {name} /predict p99 {r99:.2f}x the constant endpoint's (target <= 3x)"
        )

    rates: dict[str, float] = {s.name: 0.0 for s in servers}
    for _ in range(2):
        for server in servers:
            url = f"http://127.0.0.1:{ports[server.name]}{server.url}"
            bodies = [server.body(int(i)) for i in picks]
            rates[server.name] = max(
                rates[server.name], asyncio.run(closed_loop(url, bodies, args.clients, args.seconds))
            )
    print(
        f"\npredict, {args.clients} concurrent clients (closed loop, {args.seconds:g} s per server and round, "
        "best of 2)"
    )
    print(f"{'server':<20} {'requests/s':>11}  {'/ constant':>11}")
    for name, rate in rates.items():
        print(f"{name:<20} {rate:>11,.0f}  {rate / rates['constant']:>10.2f}x")
    for name in ("ours", "ours + shadow"):
        ratio = rates[name] / rates["constant"]
        print(
            f"{'PASS' if ratio >= 0.5 else 'FAIL'}: {name} {ratio:.2f}x the constant endpoint's requests/s "
            f"with {args.clients} clients (target >= 0.5x)"
        )

    ours = servers[0].client
    batches = [rng.integers(0, len(champion.requests), 100) for _ in range(args.batches)]
    started = time.perf_counter()
    for batch in batches:
        ours.post("/predict_batch", {"requests": [champion.requests[i] for i in batch]})
    http_rate = 100 * len(batches) / (time.perf_counter() - started)
    vectors = [[champion.vectors[i] for i in batch] for batch in batches]
    frames = [rows_to_pandas(rows, champion.columns) for rows in vectors]
    started = time.perf_counter()
    for frame in frames:
        champion.model.predict_proba(frame)
    local_rate = 100 * len(batches) / (time.perf_counter() - started)
    compiled, _ = fast_model(champion.model, "binary")
    assert compiled is not None
    started = time.perf_counter()
    for rows in vectors:
        compiled.outputs(rows)
    compiled_rate = 100 * len(batches) / (time.perf_counter() - started)
    print(f"\npredict_batch, 100 requests per call ({len(batches)} calls)")
    print(f"{'predict_batch over HTTP':<34} {http_rate:>10,.0f} rows/s  {http_rate / local_rate:.2f}x")
    print(f"{'in-process pipeline predict_proba':<34} {local_rate:>10,.0f} rows/s  1.00x")
    print(
        f"{'in-process compiled (information)':<34} {compiled_rate:>10,.0f} rows/s  {compiled_rate / local_rate:.2f}x"
    )
    ratio = http_rate / local_rate
    print(f"{'PASS' if ratio >= 0.3 else 'FAIL'}: predict_batch {ratio:.2f}x in-process scoring (target >= 0.3x)")


async def closed_loop(url: str, bodies: list[Any], clients: int, seconds: float) -> float:
    """Requests per second answered 200 to `clients` clients sending back to back for `seconds`."""
    answered = 0
    deadline = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession, offset: int) -> None:
        nonlocal answered
        n = offset
        while time.perf_counter() < deadline:
            async with session.post(url, json=bodies[n % len(bodies)]) as response:
                await response.read()
                answered += response.status == 200
            n += clients

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(client(session, k) for k in range(clients)))
    return answered / (time.perf_counter() - started)


def check_shadow(folder: Path, prepared: Prepared) -> None:
    """Every logged shadow score is the challenger's own score of the logged feature vector (the log is flushed when
    the server stops; read what was flushed so far, at least one batch)."""
    deadline = time.monotonic() + 30
    records: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not records:
        files = sorted(log_folder(folder, "fraud").rglob("*.jsonl"))
        records = [json.loads(line) for f in files for line in f.read_text().splitlines()]
        time.sleep(0.5)
    shadowed = [r for r in records if r["shadow_score"] is not None]
    features = [json.loads(r["features"]) if isinstance(r["features"], str) else r["features"] for r in shadowed]
    expected = prepared.challenger.predict_proba(rows_to_pandas(features, prepared.columns))[:, 1]
    exact = bool(len(shadowed)) and np.array_equal(np.array([r["shadow_score"] for r in shadowed]), expected)
    print(
        f"\n{'PASS' if exact else 'FAIL'}: {len(shadowed):,} of {len(records):,} logged predictions have a shadow "
        "score, each equal to the challenger's own score of the logged vector"
    )


if __name__ == "__main__":
    main()
