"""What is live and where to read about it: the models answering per pipeline, the latest drift report and the
champion's model card."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from mlops_assets.app.workspace import Workspace
from mlops_assets.core.ingest.paths import every_day_files, file_rows
from mlops_assets.core.lake import table_facts, table_path
from mlops_assets.core.models.aliases import CHAMPION
from mlops_assets.core.models.registry_view import live_status
from mlops_assets.core.pages import Page
from mlops_assets.settings import card_page, drift_report_page
from mlops_assets.spec import MonitoringSpec, PipelineSpec


def status(workspace: Workspace) -> dict[str, dict[str, Any]]:
    """Per pipeline with a model: each live alias's version, since when, and the metrics of its kind of problem."""
    return {
        spec.name: live_status(workspace.registry_reader, spec.name, spec.model.metrics)
        for spec in workspace.specs.values()
        if spec.model is not None
    }


@dataclass(frozen=True)
class FeatureViewFacts:
    key: str  # the asset key, also the Delta table's name: `namespace/view` (shared) or `pipeline/view`
    entity: str
    users: list[str]  # the pipelines reading it
    rows: int
    days: int  # daily partitions written
    fresh_through: str | None  # the last day written


def feature_views(workspace: Workspace) -> list[FeatureViewFacts]:
    """Every feature view of the specs, once per table (a shared view once, with all its users), read from the lake."""
    users: dict[tuple[str, str], list[str]] = {}
    entities: dict[tuple[str, str], str] = {}
    for spec in workspace.specs.values():
        for view in spec.feature_views:
            # The key and table defs.keys.feature_key names, without importing Dagster (this answers at once).
            place = (spec.view_namespace(view), view)
            users.setdefault(place, []).append(spec.name)
            entities[place] = spec.entity.name
    facts = []
    for (namespace, view), names in sorted(users.items()):
        rows, days, last = table_facts(table_path(workspace.lake, namespace, view))
        facts.append(
            FeatureViewFacts(f"{namespace}/{view}", entities[namespace, view], sorted(names), rows, days, last)
        )
    return facts


@dataclass(frozen=True)
class Reports:
    drift_report: Page | None  # the latest day's HTML report
    model_card: Page | None  # the champion's card (its HTML page when there is one)
    card_version: str | None  # the version of that card
    champion: str | None


def latest_reports(workspace: Workspace, pipeline: str) -> Reports:
    """The latest drift report and the champion's card (else the newest card), in the data folder or under
    MLOPS_REPORTS_URI, with the links a browser opens."""
    spec, pages = workspace.spec(pipeline), workspace.pages
    drift = pages.keys(_folder(drift_report_page(spec.name, "day")), ".html")
    card_folder = _folder(card_page(spec.name, "version"))
    markdown = {PurePosixPath(k).stem.removeprefix("v"): k for k in pages.keys(card_folder, ".md")}
    versions = sorted((v for v in markdown if v.isdigit()), key=int)
    champion = workspace.registry_reader.aliases(spec.name).get(CHAMPION)
    version = champion if champion in versions else versions[-1] if versions else None
    card = None
    if version is not None:  # the HTML page a browser shows, when there is one; the markdown is beside it
        html = markdown[version].removesuffix(".md") + ".html"
        card = pages.page(html if html in pages.keys(card_folder, ".html") else markdown[version])
    return Reports(pages.page(drift[-1]) if drift else None, card, version, champion)


def _folder(key: str) -> str:
    return str(PurePosixPath(key).parent)


def daily_volume(workspace: Workspace, spec: PipelineSpec, days: int = 14) -> list[int]:
    """Rows a day of the label source (one per prediction request) in its last `days` daily files, where the
    files are there (a generated source writes its days only when they are materialized)."""
    source = spec.sources[spec.label.source]
    if "{date}" not in source.path:
        return []
    return [file_rows(f, source) for f in every_day_files(source, workspace.lake)[-days:]]


def window_advice(daily_rows: Sequence[int], monitoring: MonitoringSpec) -> str | None:
    """When days of this volume leave the spec's window under min_rows (it would never be graded), what to say and
    the window that reaches it; None when the window is large enough (or nothing is known yet)."""
    if not daily_rows:
        return None
    median = statistics.median(daily_rows)
    if median * monitoring.window_days >= monitoring.min_rows:
        return None
    needed = math.ceil(monitoring.min_rows / max(median, 1))
    return (
        f"about {median:,.0f} prediction requests a day (median of {len(daily_rows)} days): a {monitoring.window} "
        f"window holds fewer than monitoring.min_rows ({monitoring.min_rows}) and would never be graded; set "
        f"monitoring.window: {needed}d"
    )
