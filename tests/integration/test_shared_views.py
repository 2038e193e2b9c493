"""One feature definition, one table, many models: two pipelines with different models include one shared file
(NannyML's public car loans: a source and a feature view in namespace `loan_book`). The view is ingested, computed and
synced once, both training sets and both services read the same rows, and a change of its definition is refused until
it is accepted for all of them."""

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from mlops_assets.app.reports import feature_views
from mlops_assets.app.runs import materialize, recorded_definition
from mlops_assets.app.workspace import Workspace
from mlops_assets.core.features.online import open_store, view_rows
from mlops_assets.core.lake import scan_table
from mlops_assets.definitions import build_definitions
from mlops_assets.settings import online_store_url

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAYS = 24
VIEW = "size_of_downpayment_activity"


def shared_project(root: Path) -> Path:
    """`mlops new` on the public loans, its source and view moved into specs/shared/loan_book.yaml (namespace
    loan_book), included by `loans` (gradient boosting) and `loans_lr` (logistic regression)."""
    run = [sys.executable, "-m", "mlops_assets.examples.nannyml", "loans", "loans.csv", "--days", "30"]
    subprocess.run(run, cwd=root, check=True, capture_output=True)
    new = [sys.executable, "-m", "mlops_assets.cli", "--specs", "specs", "new", "loans", "--from", "loans.csv"]
    subprocess.run(new, cwd=root, check=True, capture_output=True)
    specs = root / "specs"
    spec = yaml.safe_load((specs / "loans.yaml").read_text())
    shared = {"namespace": "loan_book", "sources": spec.pop("sources"), "feature_views": spec.pop("feature_views")}
    (specs / "shared").mkdir()
    (specs / "shared" / "loan_book.yaml").write_text(yaml.safe_dump(shared, sort_keys=False, allow_unicode=True))
    spec["include"] = ["shared/loan_book.yaml"]
    spec["model"]["holdout"] = "5d"
    (specs / "loans.yaml").write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    spec["name"] = "loans_lr"
    spec["model"] |= {"estimator": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 500}}
    (specs / "loans_lr.yaml").write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return specs


def test_two_pipelines_share_one_feature_view_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    specs = shared_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    data = tmp_path / "data"
    workspace = Workspace(str(specs), str(data))

    # One asset per shared table, upstream of both pipelines' training sets; none under a pipeline's prefix.
    graph = build_definitions(specs, str(data)).resolve_asset_graph()
    view = dg.AssetKey(["loan_book", VIEW])
    assert {dg.AssetKey(["loan_book", "raw_events"]), view, dg.AssetKey(["loan_book", "online", VIEW])} <= set(
        graph.get_all_asset_keys()
    )
    assert not {dg.AssetKey([p, VIEW]) for p in ("loans", "loans_lr")} & set(graph.get_all_asset_keys())
    downstream = graph.get(view).child_keys
    assert {dg.AssetKey(["loans", "training_set"]), dg.AssetKey(["loans_lr", "training_set"])} <= downstream

    for pipeline in ("loans", "loans_lr"):
        summary = materialize(workspace, pipeline, None, DAYS)
        assert summary.ok, summary.failures
        assert str(summary.metadata[f"{pipeline}/champion"]["version"]) == "1"
    # Ingested, computed and synced once: the second pipeline found every day there.
    shared_runs = workspace.instance.get_runs(filters=dg.RunsFilter(job_name="loan_book_daily"))
    assert len(shared_runs) == 1
    assert workspace.registry.aliases("loans") == {"champion": "1"} == workspace.registry.aliases("loans_lr")

    # Both training sets are the same rows: the same labels with the same feature values.
    sets = {p: scan_table(data / "lake" / p / "training_set").collect() for p in ("loans", "loans_lr")}
    assert {"count_1d", "car_value_mean_1d"} <= set(sets["loans"].columns)
    assert sets["loans"].sort(pl.all()).equals(sets["loans_lr"].sort(pl.all()))

    # One online key space: both pipelines' services read the same row for an entity.
    store = open_store(online_store_url(str(data)))
    assert store.watermark("loan_book", VIEW) is not None and store.watermark("loans", VIEW) is None
    request = [{"size_of_downpayment": "20%"}]
    now = datetime(2018, 1, DAYS + 2)
    rows = {p: view_rows(workspace.spec(p), store, request, now)[VIEW] for p in ("loans", "loans_lr")}
    assert rows["loans"] == rows["loans_lr"] and rows["loans"][0] is not None

    (facts,) = feature_views(Workspace(str(specs), str(data)))
    assert (facts.key, facts.users, facts.days, facts.fresh_through) == (
        f"loan_book/{VIEW}",
        ["loans", "loans_lr"],
        DAYS,
        f"2018-01-{DAYS}",
    )
    assert facts.rows == pl.read_delta(str(data / "lake" / "loan_book" / VIEW)).height

    # The shared file changes: refused for every pipeline until accepted, then applied to the one table.
    path = specs / "shared" / "loan_book.yaml"
    path.write_text(path.read_text().replace("ttl: 3d", "ttl: 4d"))
    changed = Workspace(str(specs), str(data))
    first = datetime(2018, 1, 1).date()
    refused = materialize(changed, "loans_lr", first, 2, training=False)
    assert not refused.ok
    failure = refused.failures[0]
    assert "its shared definition changed" in failure and "loans, loans_lr" in failure, failure
    assert pl.read_delta(str(data / "lake" / "loan_book" / VIEW)).height == facts.rows  # nothing written
    accepted = materialize(changed, "loans_lr", first, 2, training=False, accept_definition_change=True)
    assert accepted.ok, accepted.failures
    new_hash = changed.spec("loans").definition_hash("feature_views", VIEW)
    assert (
        recorded_definition(changed, view) == new_hash != workspace.spec("loans").definition_hash("feature_views", VIEW)
    )
    assert changed.spec("loans_lr").definition_hash("feature_views", VIEW) == new_hash  # one definition for both
