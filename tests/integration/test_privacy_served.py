"""PII on a public dataset (NannyML's car loans, from its PyPI wheel): a served day whose request carried values never
seen before, one hashed and one dropped by `serving.pii`; after the day is ingested and graded, neither value (nor the
hash key) is in any file under the data folder, as the secrets test greps it. Without the key, `mlops serve` refuses
to start, naming the variable. The same pipeline names its approvers (promotion.approvers, separate_duties): a
non-approver and the version's trainer are refused, an approver gets past the check."""

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from tests.helpers import Project, free_port, stop, wait_for_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAYS = 20
KEY = "loans-pii-key-7c1e"
CAR_VALUE, TENURE = 98765.4321, 7.77777123  # hashed, dropped: values the file never has


def readable_outputs(root: Path) -> Iterator[tuple[Path, bytes]]:
    """Every file under `root` as a reader finds its content: Parquet (Delta data files and checkpoints) decoded,
    since its pages are compressed; everything else (JSON lines, SQLite databases, HTML reports, logs) as it is."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        yield path, str(pl.read_parquet(path).to_dicts()).encode() if path.suffix == ".parquet" else path.read_bytes()


def test_a_served_day_keeps_no_raw_pii_value_anywhere_under_the_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = Project(tmp_path)
    project.run("-m", "mlops_assets.examples.nannyml", "loans", "loans.csv", "--days", str(DAYS))
    project.mlops("new", "loans", "--from", "loans.csv")
    path = tmp_path / "specs" / "loans.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["serving"] = {
        "allow_replay": True,
        "pii": {"fields": {"car_value": "hash", "driver_tenure": "drop"}, "hash_key_env": "LOANS_PII_KEY"},
    }
    spec["promotion"].update({"approvers": ["alice", "trainer"], "separate_duties": True})
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    project.env["MLOPS_ACTOR"] = "trainer"
    project.env["LOANS_PII_KEY"] = KEY  # in the environment of every run: it must still be written nowhere
    assert "loans: ok" in project.mlops("check")
    start = date.fromisoformat(str(spec["start_date"]))
    assert "champion: version 1" in project.mlops(
        "materialize", "loans", "--start", str(start), "--days", str(DAYS - 1)
    )
    for actor, refusal in [
        (
            "mallory",
            "loans: 'mallory' may not promote version 1 of 'loans': promotion.approvers is ['alice', 'trainer']",
        ),
        ("trainer", "loans: 'trainer' may not promote version 1 of 'loans': 'trainer' trained it"),
        ("alice", "version 1 of 'loans' is already the champion"),  # past the approval check, to the registry's
    ]:
        project.env["MLOPS_ACTOR"] = actor
        refused_promotion = project.invoke("promote", "loans", "1", "--reason", "ok")
        assert refused_promotion.exit_code == 1 and refusal in refused_promotion.stderr, refused_promotion.output
    data = tmp_path / "data"
    raw = [str(CAR_VALUE).encode(), str(TENURE).encode()]
    assert not [p for p, text in readable_outputs(data) for value in raw if value in text]

    port, log = free_port(), tmp_path / "serve.log"
    refused = subprocess.run(
        [sys.executable, "-m", "mlops_assets.cli", "--specs", "specs", "serve", "loans", "--port", str(port)],
        cwd=tmp_path,
        env={k: v for k, v in project.env.items() if k != "LOANS_PII_KEY"},
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1
    assert "loans: serving.pii.fields hashes ['car_value'], but the key's environment variable LOANS_PII_KEY" in (
        refused.stderr
    )
    assert "Traceback" not in refused.stderr

    day = (start + timedelta(days=DAYS - 1)).isoformat()
    server = project.serve("loans", port, log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/readyz", server, log)
        assert "requests answered" in project.mlops("replay", "loans", "--day", day, "--sample", "60", "--url", url)
        request = {
            "size_of_downpayment": "40%",
            "car_value": CAR_VALUE,
            "salary_range": "40K - 60K €",
            "debt_to_income_ratio": 0.5,
            "loan_length": 12.0,
            "repaid_loan_on_prev_car": True,
            "driver_tenure": TENURE,
            "timestamp": f"{day}T12:00:00",
            "request_id": "pii-request",
        }
        body = json.dumps({"request": request}).encode()
        call = urllib.request.Request(f"{url}/predict", body, {"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(call, timeout=30) as response:
            assert json.loads(response.read())["model_version"] == "1"
    finally:
        stop(server)
    graded = project.mlops("monitor", "loans", "--day", day)
    assert "loans/prediction_log" in graded and "drift report: file://" in graded
    monkeypatch.setenv("DAGSTER_HOME", project.env["DAGSTER_HOME"])  # where its event log storage keeps the runs
    with dg.DagsterInstance.from_config(project.env["DAGSTER_HOME"]) as instance:
        report = instance.get_latest_materialization_event(dg.AssetKey(["loans", "drift_report"]))
        assert report is not None and report.asset_materialization is not None
        # Hashed or dropped when logged: nothing of them to grade against the training set, and the report says so.
        assert report.asset_materialization.metadata["not_graded_pii"].value == "car_value, driver_tenure"

    logged = pl.read_delta(str(data / "lake" / "loans" / "prediction_log")).filter(
        pl.col("request_id") == "pii-request"
    )
    sent = json.loads(logged.get_column("request").item())
    assert sent["car_value"].startswith("hmac-sha256:") and "driver_tenure" not in sent
    assert json.loads(logged.get_column("features").item())["car_value"] == sent["car_value"]
    leaks = [(str(p), v) for p, text in readable_outputs(data) for v in [*raw, KEY.encode()] if v in text]
    assert leaks == []
    assert [p for p, text in readable_outputs(tmp_path / "home") if KEY.encode() in text] == []  # Dagster's runs
    assert KEY not in log.read_text()
