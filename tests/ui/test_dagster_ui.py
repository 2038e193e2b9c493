"""The Dagster UI as the cockpit, in a real browser: `mlops ui` and `mlops mlflow` on the demo's folder, opened in
headless Chromium (Debian's, driven by Playwright; never a downloaded browser). It shares the session's demo with
tests/integration/test_story.py, in one xdist group."""

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mlops_assets.definitions import build_definitions
from tests.helpers import Demo, free_port, service_missing, stop, wait_for_http

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("demo")]


CHROMIUM = "/usr/bin/chromium"
# Headless on a closed network: no background connections, no sandbox (CI runs as root), a fresh profile.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"


@contextmanager
def _servers(demo: Demo, servers: dict[str, tuple[int, str]]) -> Iterator[dict[str, str]]:
    """`mlops` server commands (name -> port, readiness path) of the demo's folder on loopback, started together
    (each takes seconds to come up), stopped afterwards with everything they started."""
    import psutil

    specs = demo.root / "data" / "story_specs"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLOPS_ONLINE_STORE_URL")}
    started: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    try:
        for name, (port, _) in servers.items():
            log = demo.root / f"{name}.log"
            command = [sys.executable, "-m", "mlops_assets.cli", "--specs", str(specs), "--data-dir", "data"]
            started[name] = (
                subprocess.Popen(
                    [*command, name, "--port", str(port)],
                    cwd=demo.root,
                    env={**env, "DAGSTER_HOME": str(demo.root / "dagster")},
                    stdout=log.open("w"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                ),
                log,
            )
        for name, (port, ready) in servers.items():
            wait_for_http(f"http://127.0.0.1:{port}{ready}", *started[name])
        yield {name: f"http://127.0.0.1:{port}" for name, (port, _) in servers.items()}
    finally:
        for process, _ in started.values():
            # dagster dev's webserver, daemon and code servers, and the runs the daemon launched: none may outlive it.
            children = psutil.Process(process.pid).children(recursive=True) if process.poll() is None else []
            stop(process)
            for child in psutil.wait_procs(children, timeout=10)[1]:
                child.kill()


def _open(page: Any, url: str, text: str) -> None:
    """Go to `url` and wait until the page shows `text`; Dagster's first-visit newsletter dialog is skipped."""
    page.goto(url)
    page.get_by_text(text, exact=True).first.wait_for(timeout=60_000)
    page.wait_for_load_state("networkidle")  # the rest of the page's queries
    skip = page.get_by_role("button", name="Skip")
    if skip.count():
        skip.click()


def test_the_dagster_ui_shows_the_demo_in_a_real_browser(demo: Demo) -> None:
    """`mlops ui` on the demo's instance, opened in headless Chromium: the graph by lifecycle stage, an asset's
    metadata with its MLflow links (which open in `mlops mlflow`), the drift checks with their evidence, the sensor."""
    if not Path(CHROMIUM).exists():
        service_missing(f"{CHROMIUM} is missing (Debian's chromium package: apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with (
        _servers(demo, {"ui": (free_port(), "/server_info"), "mlflow": (demo.mlflow_port, "/health")}) as urls,
        sync_playwright() as playwright,
    ):
        ui, mlflow = urls["ui"], urls["mlflow"]
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})

        # The global lineage: one group per lifecycle stage of the pipeline.
        defs = build_definitions(demo.root / "data" / "story_specs", str(demo.root / "data"))
        graph_def = defs.resolve_asset_graph()
        nodes = [graph_def.get(key) for key in graph_def.get_all_asset_keys()]
        groups = sorted({node.group_name for node in nodes})
        _open(page, f"{ui}/asset-groups", groups[0])
        for group in groups:
            assert page.get_by_text(group, exact=True).count(), group
        page.screenshot(path=ARTIFACTS / "global_lineage.png")

        # Each stage's graph: every asset of the group, its kinds, and the results of its checks.
        for group in groups:
            members = [node for node in nodes if node.group_name == group]
            _open(page, f"{ui}/locations/mlops_assets.code_location/asset-groups/{group}/lineage", "Asset checks")
            page.get_by_text("Loading...").first.wait_for(state="detached", timeout=60_000)
            graph = page.inner_text("body")
            for node in members:
                assert node.key.path[-1] in graph, (group, node.key)
            # A node without checks shows a dash; one with checks, their results (or, while the daemon's run
            # executes them, their progress).
            without_checks = sum(not node.check_keys for node in members)
            assert len(re.findall(r"^Asset checks\n\u2013$", graph, re.M)) == without_checks, (group, graph)
            assert len(members) == without_checks or re.search(r"\d+ / \d+ Passed", graph), (group, graph)
            page.screenshot(path=ARTIFACTS / f"{group}.png")

        # An asset page: description, owner, kinds, numeric metadata (plotted), and links a browser opens.
        _open(page, f"{ui}/assets/fraud/model_candidate", "mlflow_run")
        body = page.inner_text("body")
        for text in ("Trains sklearn.ensemble.HistGradientBoostingClassifier", "fraud-ml", "roc_auc", "model_version"):
            assert text in body, (text, body[:3000])
        run_link = page.locator('a[href*="/#/experiments/"]').first.get_attribute("href")
        version_link = page.locator('a[href*="/#/models/fraud/versions/"]').first.get_attribute("href")
        assert run_link and run_link.startswith(f"{mlflow}/#/experiments/") and version_link
        page.screenshot(path=ARTIFACTS / "model_candidate.png", full_page=True)
        page.get_by_role("button", name="Plots").click()
        page.get_by_text("roc_auc", exact=True).first.wait_for()
        page.screenshot(path=ARTIFACTS / "model_candidate_plots.png")

        # The drift report's checks, each with its evidence; the HTML report is a link.
        _open(page, f"{ui}/assets/fraud/drift_report?view=checks", "dataset_drift")
        checks = page.inner_text("body")
        for name in ("data_quality", "dataset_drift", "feature_drift", "prediction_drift", "training_serving_skew"):
            assert name in checks, name
        assert "Failed" in checks and "Metadata" in checks
        page.screenshot(path=ARTIFACTS / "drift_report_checks.png")
        _open(page, f"{ui}/assets/fraud/drift_report", "top_feature_psi")
        report_link = page.locator('a[href^="file://"][href$=".html"]').first.get_attribute("href")
        assert report_link and Path(report_link.removeprefix("file://")).exists()

        # The links open: MLflow's pages of the run and the version, and the champion's model card.
        page.goto(run_link)
        page.get_by_text(run_link.rsplit("/", 1)[-1]).first.wait_for(timeout=60_000)
        page.screenshot(path=ARTIFACTS / "mlflow_run.png")
        page.goto(version_link)
        page.get_by_text(f"Version {version_link.rsplit('/', 1)[-1]}").first.wait_for(timeout=60_000)
        _open(page, f"{ui}/assets/fraud/champion", "model_card")
        card = page.locator('a[href^="file://"][href$=".html"]').first.get_attribute("href")
        page.goto(card)
        assert "fraud — model version" in page.inner_text("body") and "Intended use" in page.inner_text("body")

        # The retraining sensor: running, its policy in words, and its last decision explained (the daemon of
        # `mlops ui` ticks it soon after starting).
        _open(page, f"{ui}/locations/mlops_assets.code_location/sensors/fraud_retraining", "fraud_retraining")
        page.get_by_text("Requests one run of").first.wait_for(timeout=30_000)
        page.get_by_text("last_decision", exact=False).first.wait_for(timeout=120_000)
        page.screenshot(path=ARTIFACTS / "retraining_sensor.png")
        browser.close()
