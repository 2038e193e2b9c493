"""Helpers the tests share: example specs and data, servers started and stopped, HTTP calls, polling with one
generous deadline. Fixtures live in the conftest.py of the folder that uses them (shared ones in tests/conftest.py)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from click.testing import CliRunner, Result

from mlops_assets.cli import main
from mlops_assets.core.lake import content_hash, location, scan_table, table_version
from mlops_assets.spec import BUILTIN_SPECS_DIR

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


DAYS = ("2026-01-01", "2026-01-16")

# The object-storage tests' credentials (tests/conftest.py s3_lake): values no output may ever show.
S3_SECRET = "mlops-s3-secret-8c1f0e"
S3_TOKEN = "mlops-s3-session-token-5d2a"


SMALL_SPEC = textwrap.dedent(
    """
    name: shop
    start_date: 2026-03-01
    entity: {name: user, keys: [user_id]}
    sources:
      orders:
        path: landing/orders/{date}.csv
        event_timestamp: ts
        max_rejected_share: 0.45
        columns:
          user_id: {dtype: string, nullable: false}
          amount: {dtype: float, nullable: false, min: 0}
          channel: {dtype: string, isin: [web, app]}
          ts: {dtype: datetime, nullable: false}
      returns:
        path: landing/returns/{date}.csv
        event_timestamp: returned_at
        columns:
          user_id: {dtype: string, nullable: false}
          ordered_at: {dtype: datetime, nullable: false}
          amount: {dtype: float}
          returned: {dtype: int, min: 0, max: 1}
          returned_at: {dtype: datetime, nullable: false}
    feature_views:
      user_orders:
        source: orders
        ttl: 2d
        aggregations:
          - {functions: [count], windows: [1d]}
          - {column: amount, functions: [sum, max], windows: [1d]}
    request_features:
      amount: {dtype: float}
    label:
      source: returns
      column: returned
      timestamp: returned_at
      prediction_timestamp: ordered_at
    """
)


ORDERS = {
    "2026-03-01": "user_id,amount,channel,ts\nu1,10.0,web,2026-03-01T08:00:00\nu2,5.5,app,2026-03-01T09:30:00\n"
    "u1,7.0,web,2026-03-01T12:00:00\n",
    "2026-03-02": "user_id,amount,channel,ts\nu1,3.0,app,2026-03-02T10:00:00\nu2,abc,web,2026-03-02T11:00:00\n"
    "u3,-4.0,fax,2026-03-02T12:00:00\nu3,2.0,web,2026-03-02T13:00:00\nu3,8.0,web,2026-03-02T14:00:00\n",
}


RETURNS = {
    "2026-03-01": "user_id,ordered_at,amount,returned,returned_at\n",
    "2026-03-02": "user_id,ordered_at,amount,returned,returned_at\nu1,2026-03-01T12:00:00,7.0,1,2026-03-02T09:00:00\n"
    "u2,2026-03-01T09:30:00,5.5,0,2026-03-02T10:00:00\n",
}


def write_day_files(data_dir: Path, source: str, files: dict[str, str]) -> None:
    folder = data_dir / "landing" / source
    folder.mkdir(parents=True, exist_ok=True)
    for day, text in files.items():
        (folder / f"{day}.csv").write_text(text)


def small_fraud_specs(folder: Path, **replace: str) -> Path:
    """The built-in example at a tenth of its size, with a fast model; `replace` edits fraud.yaml."""
    shutil.copytree(BUILTIN_SPECS_DIR / "shared", folder / "shared")
    shared = folder / "shared" / "card_transactions.yaml"
    text = (
        shared.read_text()
        .replace("customers: 5000", "customers: 300")
        .replace("transactions_per_day: 10000", "transactions_per_day: 1500")
    )
    shared.write_text(text)
    spec = (BUILTIN_SPECS_DIR / "fraud.yaml").read_text()
    spec = spec.replace("params: {max_iter: 150, learning_rate: 0.1, max_leaf_nodes: 31}", "params: {max_iter: 30}")
    spec = spec.replace("holdout: 5d", "holdout: 3d").replace("minimum: 0.3", "minimum: 0.05")
    for old, new in replace.items():
        assert old in spec
        spec = spec.replace(old, new)
    (folder / "fraud.yaml").write_text(spec)
    return folder


def lake_tables(data: Path) -> dict[str, str]:
    """Every Delta table under a data folder's lake, read as a reader would: table -> content hash. A `_delta_log`
    folder without a commit (a writer killed before its first one) is no table."""
    tables = {}
    for log in sorted((data / "lake").rglob("_delta_log")):
        if table_version(log.parent) is None:
            continue
        frame = scan_table(log.parent).collect()
        tables[str(log.parent.relative_to(data))] = content_hash(frame.select(sorted(frame.columns)))
    return tables


def s3_objects(uri: str) -> list[str]:
    """The keys under an s3://bucket/prefix, listed with boto3 (the AWS_* variables of the environment)."""
    import boto3

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def s3_lake_tables(uri: str) -> dict[str, str]:
    """`lake_tables` of a lake in object storage: each Delta table under s3://bucket/prefix/lake -> content hash,
    keyed as `lake_tables` keys a local one (`lake/pipeline/table`); likewise, a log without a commit is no table."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    logs = {key.partition("/_delta_log/")[0] for key in s3_objects(f"{uri}/lake/") if "/_delta_log/" in key}
    tables = {}
    for table in sorted(logs):
        if table_version(where := location(f"s3://{bucket}/{table}")) is None:
            continue
        frame = scan_table(where).collect()
        tables[table.removeprefix(f"{prefix}/")] = content_hash(frame.select(sorted(frame.columns)))
    return tables


def service_missing(message: str) -> None:
    """Skip a test whose service is missing, with the reason; in CI (CI=true) services are mandatory: fail."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}: services are mandatory in CI")
    pytest.skip(message)


def require_service(name: str, port: int) -> None:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError as exc:
        service_missing(f"{name} is not reachable on 127.0.0.1:{port} ({exc})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# How long a server may take to start, for every server the tests start: generous, because a fresh clone's CI run on
# a busy two-core machine is slow, and a server that fails exits (which is noticed at once) rather than hangs.
SERVER_START_SECONDS = 300
# How long a test polls for something that happens in the background (a flush, a refresh) before it fails.
POLL_SECONDS = 30


def until(condition: Callable[[], object], timeout: float = POLL_SECONDS, what: str = "the condition") -> None:
    """Poll `condition` until it holds; fail saying `what` did not happen within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.05)


def wait_for_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until `url` answers 200; the server's log in the error if it exits or never does."""
    deadline = time.monotonic() + SERVER_START_SECONDS
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} never answered: {log.read_text()[-3000:]}")
        time.sleep(0.5)


KEY = "test-key-5f1c"  # the API key the served fixtures set and their requests send


BODY = {
    "customer_id": "c000042",
    "amount": 120.5,
    "merchant_category": "electronics",
    "channel": "online",
    "country": "FR",
}


@dataclass
class Served:
    specs: Path
    data: Path
    home: Path
    tracking: str

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "mlops_assets.cli", "--specs", str(self.specs), "--data-dir", str(self.data)]
        return subprocess.run(
            [*command, *args], env=self.env(), cwd=self.home, capture_output=True, text=True, timeout=300
        )

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "MLFLOW_TRACKING_URI": self.tracking,
            "MLOPS_API_KEY": KEY,
            "DAGSTER_HOME": str(self.home / "dagster"),
        }

    def start(self, name: str, **env: str) -> tuple[str, subprocess.Popen[bytes]]:
        """`mlops serve` in a process group of its own (so a test can kill the server and its workers at once)."""
        port, log = free_port(), self.home / f"{name}.log"
        command = [sys.executable, "-m", "mlops_assets.cli", "--specs", str(self.specs), "--data-dir", str(self.data)]
        process = subprocess.Popen(
            [*command, "serve", "fraud", "--port", str(port)],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env={**self.env(), **env},
            cwd=self.home,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/readyz", process, log)
        return url, process


def stop(process: subprocess.Popen[bytes]) -> None:
    """A graceful stop: BentoML's arbiter stops its workers (which run in sessions of their own)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def kill_server(process: subprocess.Popen[bytes]) -> int:
    """SIGKILL a server and every process it started, at once (a crash); returns how many were killed."""
    import psutil

    if process.poll() is not None:
        return 0
    victims = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    for victim in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.kill()
    process.wait(timeout=10)
    psutil.wait_procs(victims, timeout=10)
    return len(victims)


def post(url: str, body: Any, key: str | None = KEY) -> tuple[int, Any]:
    """(status, JSON answer) of a JSON POST, with the API key as X-API-Key unless `key` is None."""
    status, _, answer = call(url, json.dumps(body).encode(), {"x-api-key": key} if key else {})
    return status, answer


def answered_count(url: str) -> float:
    """A served service's count of answers (every model version, degraded or not), from its /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("mlops_predictions_total{"))


def call(
    url: str, data: bytes | None, headers: dict[str, str], method: str = "POST", timeout: float = 10
) -> tuple[int, Message, Any]:
    """(status, headers, JSON answer) of one HTTP call with exactly these `headers` (JSON as the content type unless
    they say otherwise); an error status is returned, not raised."""
    request = urllib.request.Request(url, data, {"content-type": "application/json", **headers}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


@dataclass
class Project:
    """A user's project folder driven through the CLI, with a Dagster home of its own and none of this machine's
    MLOPS_/MLFLOW_ settings: `mlops` commands in this process (in a process each, every command would pay seconds of
    imports), examples and servers in processes of their own."""

    folder: Path

    def __post_init__(self) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_"))}
        self.env["DAGSTER_HOME"] = str(self.folder / "home")
        (self.folder / "home").mkdir(exist_ok=True)

    def run(self, *args: str) -> str:
        """`python ARGS` in the folder; its output, or its output in the assertion when it fails."""
        result = subprocess.run([sys.executable, *args], cwd=self.folder, env=self.env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    def invoke(self, *args: str) -> Result:
        """`mlops --specs specs ARGS` as if run in the folder with the project's environment (this process's working
        folder and environment are restored afterwards): its exit code, stdout and stderr."""
        with mock.patch.dict(os.environ, self.env, clear=True), contextlib.chdir(self.folder):
            return CliRunner().invoke(main, ["--specs", "specs", *args])

    def mlops(self, *args: str) -> str:
        """`mlops --specs specs ARGS`' output, or its output and error in the assertion when it fails."""
        result = self.invoke(*args)
        assert result.exit_code == 0, result.output[-6000:] + repr(result.exception)
        return result.stdout

    def serve(self, pipeline: str, port: int, log: Path) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "mlops_assets.cli", "--specs", "specs", "serve", pipeline, "--port", str(port)]
        return subprocess.Popen(
            command,
            cwd=self.folder,
            env=self.env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@dataclass
class Demo:
    root: Path
    output: str
    mlflow_port: int
