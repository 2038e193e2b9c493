"""The `mlops` command's failures are for people: a message naming what and where, exit 1, a traceback only with
--debug; and `mlops report` finds the latest drift report and model card."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.exceptions import MlflowException

from mlops_assets.cli import main


def test_a_bad_spec_is_a_located_message_and_exit_1_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "shop.yaml").write_text("name: shop\nstart_date: 2026-03-01\nentity: {name: user, keys: []}\n")
    result = CliRunner().invoke(main, ["--specs", str(tmp_path), "check"])
    assert result.exit_code == 1
    assert f"invalid spec {tmp_path / 'shop.yaml'}" in result.output and "entity.keys" in result.output
    assert "Traceback" not in result.output


def test_an_unreachable_service_says_which_settings_to_check_without_their_passwords(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlops:s3cret-pw@127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "report", "fraud"])
    assert result.exit_code == 1 and "a service did not answer: check MLFLOW_TRACKING_URI" in result.output
    assert "--debug for the traceback" in result.output and "s3cret-pw" not in result.output
    debug = CliRunner().invoke(main, ["--debug", "--data-dir", str(tmp_path), "report", "fraud"])
    assert isinstance(debug.exception, MlflowException)  # the traceback is the caller's to see


def test_report_prints_the_latest_drift_report_and_model_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cli = ["--data-dir", str(tmp_path), "report", "fraud"]
    empty = CliRunner().invoke(main, cli)
    assert empty.exit_code == 1 and "drift report: none yet" in empty.output
    drift, cards = tmp_path / "reports/fraud/drift", tmp_path / "model_cards/fraud"
    drift.mkdir(parents=True)
    cards.mkdir(parents=True)
    for name in ("2026-01-31.html", "2026-02-01.html"):
        (drift / name).write_text("<html></html>")
    for version in (1, 2, 10):
        (cards / f"v{version}.md").write_text(f"# version {version}")
    result = CliRunner().invoke(main, cli)
    assert result.exit_code == 0, result.output
    assert f"drift report: {(drift / '2026-02-01.html').as_uri()}" in result.output
    # No champion in this registry: the newest card (by version number, not by name).
    assert f"model card: {(cards / 'v10.md').as_uri()} (version 10)" in result.output
    (cards / "v10.html").write_text("<html>version 10</html>")  # the page the card asset also writes
    assert f"model card: {(cards / 'v10.html').as_uri()} (version 10)" in CliRunner().invoke(main, cli).output


def test_help_lists_every_command_once_under_what_a_person_is_doing() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    sections = [line.rstrip(":") for line in result.output.splitlines() if line and not line.startswith(" ")]
    assert sections[-4:] == ["Start", "Run the pipeline", "Models", "Serve and look"]
    listed = re.findall(r"^  (\S+)", result.output.split("Start:")[1], re.M)  # wrapped help is indented deeper
    assert sorted(listed) == sorted(main.commands) and len(listed) == len(set(listed))
    for name, command in main.commands.items():
        assert re.search(r"Examples?: mlops", command.help or ""), f"mlops {name} --help shows no example"


def test_exit_codes_mean_ok_failure_usage(tmp_path: Path) -> None:
    assert CliRunner().invoke(main, ["check"]).exit_code == 0
    assert CliRunner().invoke(main, ["--specs", str(tmp_path / "missing"), "check"]).exit_code == 1
    assert CliRunner().invoke(main, ["materialize"]).exit_code == 2  # no PIPELINE
    assert CliRunner().invoke(main, ["rollback", "nope"]).exit_code == 2  # not a pipeline of the specs


def test_colour_is_for_terminals_only(tmp_path: Path) -> None:
    """Piped (not a terminal), the red of an error is plain text; a terminal gets the colour."""
    (tmp_path / "shop.yaml").write_text("name: shop\n")
    command = [sys.executable, "-m", "mlops_assets.cli", "--specs", str(tmp_path), "check"]
    piped = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert piped.returncode == 1 and "error: invalid spec" in piped.stderr and "\x1b[" not in piped.stderr
    coloured = CliRunner().invoke(main, command[3:], color=True)  # as a terminal would show it
    assert "\x1b[31m" in coloured.output
