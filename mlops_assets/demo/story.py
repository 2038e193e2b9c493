"""The whole lifecycle, by itself: what `mlops demo` runs and narrates.

A copy of the built-in fraud example in which, from the day after the champion was trained, amounts double
(covariate drift, which the drift report sees at once) and fraud changes its pattern to bursts of small domestic POS
payments (concept drift, which only the delayed labels reveal). The champion is served from its bento; each
following day that day's transactions are replayed against the live service, the day is ingested, its drift report
and performance are graded, and the retraining sensor ticks. A retraining whose model passes the gate becomes
challenger (promotion: manual), the live service shadows it, and it is promoted only if it also wins on labelled
live traffic. A rollback ends the story.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from mlops_assets.app import champion
from mlops_assets.app.retraining import Retrained, retraining_tick
from mlops_assets.app.workspace import AppError, Workspace
from mlops_assets.core.models.aliases import CHALLENGER, CHAMPION
from mlops_assets.core.serving.prediction_log import log_folder, read_day
from mlops_assets.core.serving.shadow import ShadowOutcome
from mlops_assets.spec import BUILTIN_SPECS_DIR, load_specs

FIRST_DAY = date(2026, 1, 1)


@dataclass
class StoryLog:
    """What happened on which day, for the closing summary."""

    events: list[tuple[str, str]] = field(default_factory=list)
    echo: Callable[[str], None] = print

    def __call__(self, day: date | str, text: str) -> None:
        self.events.append((str(day), text))
        self.echo(f"[{day}] {text}")


def set_generator_params(shared: Path, generator: str = "demo", **params: Any) -> None:
    """Change some params of a generator declared in a spec file (the file is rewritten without its comments)."""
    data = yaml.safe_load(shared.read_text())
    data["generators"][generator]["params"].update(params)
    shared.write_text(yaml.safe_dump(data, sort_keys=False))


def story_specs(folder: Path, shift_day: date, customers: int, per_day: int) -> Path:
    """The built-in example with two scenarios from `shift_day` (amounts x2, fraud's new pattern), replays allowed,
    a performance floor, manual promotion after a shadow comparison on 100 labelled live requests and a gate minimum
    of 0.15 instead of 0.3."""
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(BUILTIN_SPECS_DIR, folder, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    scenarios = [
        {"kind": "amount_shift", "start": shift_day, "factor": 2.0},
        {"kind": "concept_drift", "start": shift_day},
    ]
    set_generator_params(
        folder / "shared" / "card_transactions.yaml",
        customers=customers,
        transactions_per_day=per_day,
        scenarios=scenarios,
    )
    spec = folder / "fraud.yaml"
    text = spec.read_text().replace("refresh_seconds: 10 ", "refresh_seconds: 1\n  allow_replay: true ")
    # Labels come 1 to 14 days late: the example's 200 labelled live requests would not arrive within a short story,
    # and a model trained on its few days of the new fraud pattern does not reach the example's offline minimum.
    text = text.replace("  retention: 30d", "  retention: 30d\n  min_shadow_rows: 100")
    text = text.replace("  minimum: 0.3\n", "  minimum: 0.15\n")
    text += (
        "\nmonitoring:\n  performance_floor: 0.3\n"
        "  retraining: {sustained_k: 2, sustained_n: 3, cooldown: 3d, max_per_week: 2, promotion: manual}\n"
    )
    spec.write_text(text)
    load_specs(folder)  # fails here, with the spec's own message, if an edit went wrong
    return folder


def _post(url: str, body: Any) -> Any:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _serve(specs: Path, data: Path, port: int, log: Path, lake_uri: str | None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_API_KEY"}
    command = [sys.executable, "-m", "mlops_assets.cli", "--specs", str(specs), "--data-dir", str(data)]
    command += ["--lake-uri", lake_uri] if lake_uri else []
    process = subprocess.Popen(
        [*command, "serve", "fraud", "--port", str(port)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.5)
        if process.poll() is not None:
            break
    raise RuntimeError(f"the bento did not start: {log.read_text()[-2000:]}")


class Story:
    """The demo, told day by day through the application layer (the functions the CLI uses), never the wiring."""

    def __init__(self, workspace: Workspace, echo: Callable[[str], None]) -> None:
        self.data, self.debug, self.log = workspace.root, workspace.debug, StoryLog(echo=echo)
        self.lake_uri = workspace.lake_uri  # --lake-uri, if given: the story's runs and its served bento use it too

    def run(self, history: int, days: int, customers: int, per_day: int, sample: int, port: int) -> StoryLog:
        from mlops_assets.app.runs import grade_day, materialize
        from mlops_assets.demo.generator import FraudGeneratorConfig, transactions_for_day

        shift = FIRST_DAY + timedelta(days=history + 1)
        specs = story_specs(self.data / "story_specs", shift, customers, per_day)
        self.workspace = Workspace(str(specs), str(self.data), self.debug, self.lake_uri)
        self.specs, self.spec = specs, self.workspace.spec("fraud")
        self.log(
            FIRST_DAY,
            f"{history} days of card transactions; from {shift} amounts double (covariate drift) and fraud turns to "
            "small domestic POS payments (concept drift)",
        )
        summary = materialize(self.workspace, "fraud", FIRST_DAY, history)
        for text, _ in summary.lines():
            self.log.echo(text)
        if not summary.ok:
            raise RuntimeError(f"the first model could not be built: {summary.failures}")
        last = FIRST_DAY + timedelta(days=history - 1)
        self.log(last, f"champion version {self._aliases()[CHAMPION]} trained, gated and bundled into a bento")
        server = _serve(specs, self.data, port, self.data / "story_serve.log", self.lake_uri)
        url = f"http://127.0.0.1:{port}"
        self.log(last, f"the bento serves on {url}")
        cursor: str | None = None
        config = FraudGeneratorConfig.model_validate(self.spec.generators["demo"].params)
        try:
            for offset in range(1, days + 1):
                day = last + timedelta(days=offset)
                traffic = transactions_for_day(config, day)
                traffic = traffic.sample(min(sample, traffic.height), seed=offset).sort("ts")
                self._live(url)
                self._replay(url, day, traffic)
                self._logged(day, traffic.height)
                graded = grade_day(self.workspace, "fraud", day)
                failed = sorted(set(graded.summary.failed_checks))
                if failed:
                    self.log(day, f"monitoring flags: {', '.join(failed)}")
                self._shadow(day)
                cursor = self._tick(day, cursor)
            self._rollback(url, last + timedelta(days=days))
        finally:
            server.terminate()
            server.wait(timeout=30)
        return self.log

    def _aliases(self) -> dict[str, str]:
        return self.workspace.registry.aliases(self.spec.name)

    def _live(self, url: str, timeout: float = 60) -> dict[str, str]:
        """Until the live service answers with the registry's versions (it re-reads them every refresh_seconds)."""
        deadline, aliases = time.monotonic() + timeout, self._aliases()

        def versions() -> dict[str, str]:  # /models also names the pipeline served
            return {k: v for k, v in _post(f"{url}/models", {}).items() if k != "pipeline"}

        while (live := versions()) != aliases and time.monotonic() < deadline:
            time.sleep(0.5)
        return live

    def _logged(self, day: date, requests: int, timeout: float = 60) -> None:
        """Until every answer of the day (with its shadow score) is in the log files the daily job ingests."""
        folder, deadline = log_folder(self.workspace.lake, self.spec.name), time.monotonic() + timeout
        while read_day(folder, day).height < requests and time.monotonic() < deadline:
            time.sleep(0.5)

    def _replay(self, url: str, day: date, traffic: Any) -> None:
        fields = ["customer_id", "amount", "merchant_category", "channel", "country"]
        versions: dict[str, int] = {}
        degraded = 0
        rows = traffic.to_dicts()
        for start in range(0, len(rows), 100):
            requests = [
                {**{f: r[f] for f in fields}, "request_id": r["transaction_id"], "timestamp": r["ts"].isoformat()}
                for r in rows[start : start + 100]
            ]
            for answer in _post(f"{url}/predict_batch", {"requests": requests}):
                versions[answer["model_version"]] = versions.get(answer["model_version"], 0) + 1
                degraded += answer["degraded"]
        models = _post(f"{url}/models", {})
        answered = ", ".join(f"{n} by version {v}" for v, n in sorted(versions.items()))
        shadow = f"; version {models[CHALLENGER]} in shadow" if CHALLENGER in models else ""
        self.log(day, f"{len(rows)} transactions scored live: {answered}; {degraded} degraded{shadow}")

    def _tick(self, day: date, cursor: str | None) -> str | None:
        """The retraining sensor's decision at the end of `day`: the story's clock, not the wall clock, so that
        cooldowns and the weekly cap are counted in the days of the story."""
        now = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
        tick = retraining_tick(self.workspace, self.spec, cursor, now)
        if tick.retrained is None:
            return tick.cursor
        self.log(day, f"retraining sensor: {tick.explanation}")
        if tick.retrained is Retrained.CHALLENGER:
            self.log(day, f"retrained ({tick.reason}): version {tick.version} passed the gate, now challenger")
        elif tick.retrained is Retrained.CHAMPION:
            self.log(day, f"retrained ({tick.reason}): version {tick.version} passed the gate, now champion")
        elif tick.retrained is Retrained.REFUSED:
            self.log(day, f"retrained ({tick.reason}): the candidate did not pass the gate ({tick.gate})")
        else:
            self.log(day, f"retrained ({tick.reason}): the run failed before the gate")
        return tick.cursor

    def _shadow(self, day: date) -> None:
        """With a challenger in shadow: compare it with the champion on labelled live traffic; promote if it wins."""
        if CHALLENGER not in self._aliases():
            return
        verdict, change = champion.promote_if_won(self.workspace, self.spec, "mlops demo")
        if change is not None:
            self.log(day, f"shadow comparison won: version {change.event.version} is champion ({verdict.reasons})")
        elif verdict.outcome is ShadowOutcome.LOST:
            self.log(day, f"shadow comparison: the challenger stays challenger ({verdict.reasons})")

    def _rollback(self, url: str, day: date) -> None:
        """Roll the champion back, and show the live service answering with the previous version."""
        try:
            change = champion.rollback(self.workspace, self.spec, "mlops demo")
        except AppError as exc:
            self.log(day, f"rollback: not possible ({exc})")
            return
        live = self._live(url)
        self.log(
            day,
            f"rollback: champion back to version {change.event.version} (from {change.event.previous}); the live "
            f"bento now answers with version {live[CHAMPION]}, without a restart",
        )
