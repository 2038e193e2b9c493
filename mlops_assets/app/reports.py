"""What is live and where to read about it: the models answering per pipeline, the latest drift report and the
champion's model card."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_assets.app.workspace import Workspace
from mlops_assets.core.models.registry import CHAMPION
from mlops_assets.settings import card_path, drift_report_path


def status(workspace: Workspace) -> dict[str, dict[str, Any]]:
    """Per pipeline with a model: each live alias's version, since when, and the metrics of its kind of problem."""
    return {
        spec.name: workspace.registry.status(spec.name, spec.model.metrics)
        for spec in workspace.specs.values()
        if spec.model is not None
    }


@dataclass(frozen=True)
class Reports:
    drift_report: Path | None  # the latest day's HTML report
    model_card: Path | None  # the champion's card (its HTML page when there is one)
    champion: str | None


def latest_reports(workspace: Workspace, pipeline: str) -> Reports:
    spec = workspace.spec(pipeline)
    drift = sorted(drift_report_path(workspace.root, spec.name, "*").parent.glob("*.html"))
    cards = sorted(card_path(workspace.root, spec.name, "*").parent.glob("v*.md"), key=lambda p: int(p.stem[1:]))
    champion = workspace.registry.aliases(spec.name).get(CHAMPION)
    card = next((c for c in cards if c.stem == f"v{champion}"), cards[-1] if cards else None)
    if card is not None and card.with_suffix(".html").exists():
        card = card.with_suffix(".html")  # the page a browser shows; the markdown is beside it
    return Reports(drift[-1] if drift else None, card, champion)
