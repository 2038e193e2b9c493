"""Benchmark: the prediction service under twice its capacity, then back to normal load.

Setup as bench_serving.py (seeded online rows, a champion, `mlops serve --from-source`, one worker). Three phases,
all against the same server, measured in the same run:

1. **capacity**: closed loop, `--clients` concurrent clients sending /predict back to back: the throughput C
   and the latency at capacity (the baseline of the ratios below).
2. **overload**: open loop at 2 C for `--seconds`: requests are sent on schedule whatever the answers. Counts of
   200 / 429 / 503 / others; p99 of the accepted answers against the p99 at capacity; the server's resident memory
   (its process tree) at its peak against before the overload; every 429 and 503 must carry Retry-After.
3. **recovery**: open loop at C / 2 for `--seconds` / 2: every request answered 200 again.

Targets: the excess is shed (429/503) rather than queued without bound; accepted p99 stays bounded (reported as a
ratio); memory does not grow with the overload (peak / before reported); full service after it.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil
from bench_serving import free_port, pct, prepare, service_env, start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=5_000)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients while measuring capacity")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the overload phase")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-overload-"))
    try:
        run(folder, args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(folder: Path, args: argparse.Namespace) -> None:
    requests = prepare(folder, args.entities).requests
    env = service_env(folder)
    port = free_port()
    command = [sys.executable, "-m", "mlops_assets.cli", "--data-dir", str(folder), "serve", "fraud", "--from-source"]
    server = start([*command, "--port", str(port)], env, folder / "server.log", port)
    try:
        asyncio.run(phases(f"http://127.0.0.1:{port}/predict", requests, server.pid, args))
    finally:
        server.terminate()
        server.wait(timeout=30)


class Memory:
    """The peak resident memory of a process tree, sampled every 100 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.root, self.peak, self.running = psutil.Process(pid), 0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def now(self) -> int:
        processes = [self.root, *self.root.children(recursive=True)]
        return sum(p.memory_info().rss for p in processes if p.is_running())

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.now())
            time.sleep(0.1)

    def __enter__(self) -> Memory:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.running = False
        self.thread.join()


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, float, bool]:
    """(status, seconds, whether a 429/503 carried Retry-After); status 0 for a failed connection."""
    started = time.perf_counter()
    try:
        async with session.post(url, json={"request": body}) as response:
            await response.read()
            return response.status, time.perf_counter() - started, "Retry-After" in response.headers
    except aiohttp.ClientError:
        return 0, time.perf_counter() - started, False


async def closed_loop(url: str, rows: list[dict[str, Any]], clients: int, seconds: float) -> tuple[float, list[float]]:
    """Throughput (req/s) and latencies of `clients` clients sending back to back for `seconds`."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    rng = np.random.default_rng(0)

    async def client(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            status, elapsed, _ = await post(session, url, rows[int(rng.integers(len(rows)))])
            if status == 200:
                latencies.append(elapsed)

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return len(latencies) / (time.perf_counter() - started), latencies


async def open_loop(url: str, rows: list[dict[str, Any]], rate: float, seconds: float) -> list[tuple[int, float, bool]]:
    """Requests sent on schedule at `rate` per second for `seconds`, whatever the answers."""
    rng = np.random.default_rng(1)
    tasks = []
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=2_000), timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        started = time.perf_counter()
        for n in range(int(rate * seconds)):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(session, url, rows[int(rng.integers(len(rows)))])))
        return list(await asyncio.gather(*tasks))


def summary(name: str, results: list[tuple[int, float, bool]], baseline_p99: float) -> float:
    statuses: dict[int, int] = {}
    for status, _, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    accepted = [elapsed for status, elapsed, _ in results if status == 200]
    p50, p99 = (pct(accepted, 50), pct(accepted, 99)) if accepted else (float("nan"), float("nan"))
    counts = ", ".join(f"{status or 'no answer'}: {n}" for status, n in sorted(statuses.items()))
    print(
        f"{name:<10} {len(results):>6} requests  [{counts}]  accepted p50 {p50:.1f} ms  p99 {p99:.1f} ms "
        f"({p99 / baseline_p99:.2f}x capacity p99)"
    )
    return p99


async def phases(url: str, rows: list[dict[str, Any]], pid: int, args: argparse.Namespace) -> None:
    await closed_loop(url, rows, args.clients, 3)  # warm-up
    capacity, latencies = await closed_loop(url, rows, args.clients, 8)
    capacity_p99 = pct(latencies, 99)
    print(
        f"\ncapacity   {capacity:,.0f} req/s with {args.clients} clients; p50 {pct(latencies, 50):.1f} ms, "
        f"p99 {capacity_p99:.1f} ms (the baseline)"
    )
    with Memory(pid) as memory:
        before = memory.now()
        overload = await open_loop(url, rows, 2 * capacity, args.seconds)
        peak = memory.peak
    shed = [r for r in overload if r[0] in (429, 503)]
    overload_p99 = summary("overload", overload, capacity_p99)
    recovery = await open_loop(url, rows, capacity / 2, args.seconds / 2)
    summary("recovery", recovery, capacity_p99)
    print(
        f"memory     {before / 2**20:,.0f} MiB before the overload, peak {peak / 2**20:,.0f} MiB during it "
        f"({peak / before:.2f}x)"
    )
    checks = {
        "the excess is shed (429/503), not queued": len(shed) > 0,
        "every 429/503 carries Retry-After": all(has for _, _, has in shed),
        "no request went unanswered": all(status != 0 for status, _, _ in overload + recovery),
        "accepted p99 under overload stays within 10x the p99 at capacity": overload_p99 <= 10 * capacity_p99,
        "memory peak within 1.5x of before": peak <= 1.5 * before,
        "full service after the overload": all(status == 200 for status, _, _ in recovery),
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}")


if __name__ == "__main__":
    main()
