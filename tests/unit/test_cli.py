"""The `mlops` command's failures are for people: a message naming what and where, exit 1, a traceback only with
--debug (a taken port, BentoML failing to start, a failed step); `mlops serve` keeps its metrics in a folder of its
own; and `mlops report` finds the latest drift report and model card."""

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.exceptions import MlflowException

from mlops_assets.app.runs import step_error
from mlops_assets.app.serve import metrics_folder
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


def test_an_object_store_out_of_reach_or_misconfigured_is_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLOPS_REPORTS_URI", "s3://reports/mlops")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAMLOPSTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-shown-4d1e")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "report", "fraud"])
    assert result.exit_code == 1 and "Traceback" not in result.output and "not-shown-4d1e" not in result.output
    assert result.output.splitlines()[0] == (
        "error: cannot list s3://reports/mlops/reports/fraud/drift/: the object store does not answer at "
        "http://127.0.0.1:9 (check AWS_ENDPOINT_URL)"
    )
    monkeypatch.setenv("MLOPS_REPORTS_URI", "/srv/reports")
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "report", "fraud"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.splitlines()[0] == (
        "error: MLOPS_REPORTS_URI must be an object-store location such as s3://bucket/prefix, not '/srv/reports'"
    )
    # An error the CLI expected (said without a traceback) is masked as well as any other: the secret key, copied
    # into a location by mistake, never reaches the terminal.
    result = CliRunner().invoke(main, ["--lake-uri", "s3://lake/p?secret=not-shown-4d1e", "features"])
    assert result.exit_code == 1 and "without a query" in result.output and "not-shown-4d1e" not in result.output
    # A spec is valid whether or not its files can be read: `check` says it, and that the volume was not checked.
    checked = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "--lake-uri", "s3://lake/p", "check"])
    assert checked.exit_code == 0 and "fraud: ok" in checked.output, checked.output
    assert "note: daily volume not checked: the lake s3://lake/p cannot be reached" in checked.output


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


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _fake_bento(data: Path, tag: str = "nothere") -> None:
    """What `mlops serve` looks for before starting BentoML: the pipeline's `latest` pointer in the bento store."""
    store = data / "bentoml" / "bentos" / "mlops_fraud"
    store.mkdir(parents=True)
    (store / "latest").write_text(tag)


def test_a_taken_port_is_one_line_saying_what_to_do_before_anything_starts(tmp_path: Path, listening: int) -> None:
    _fake_bento(tmp_path)
    for command in (["serve", "fraud"], ["mlflow"], ["ui"]):
        result = CliRunner(env={"DAGSTER_HOME": str(tmp_path / "home")}).invoke(
            main, ["--data-dir", str(tmp_path), *command, "--port", str(listening)]
        )
        assert result.exit_code == 1, (command, result.output)
        assert result.output == (
            f"error: port {listening} on 127.0.0.1 is in use (another server listens there): stop it, or choose "
            "another --port\n"
        )
    assert not (tmp_path / "serving").exists()  # serve stopped before making its metrics folder


def test_bentoml_failing_to_start_is_a_message_and_leaves_no_metrics_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bentoml._internal.configuration.containers import BentoMLContainer

    _fake_bento(tmp_path)  # a `latest` pointing at no bento
    for variable in ("MLOPS_DATA_DIR", "BENTOML_HOME"):  # `serve` sets them for BentoML: restored afterwards
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)
    try:
        result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "serve", "fraud", "--port", str(_free_port())])
    finally:  # what `serve` told this process's BentoML
        BentoMLContainer.bentoml_home.reset()
        BentoMLContainer.prometheus_multiproc_dir.reset()
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: BentoML could not start mlops_fraud:latest: Failed to load bento")
    assert "no Bentos with name 'mlops_fraud' exist" in result.output and "Traceback" not in result.output
    assert list((tmp_path / "serving" / "fraud" / "metrics").iterdir()) == []


def test_each_serve_process_has_its_own_metrics_folder_and_only_the_dead_ones_are_removed(tmp_path: Path) -> None:
    machine = socket.gethostname()
    root = tmp_path / "serving" / "fraud" / "metrics"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    others = {
        "running": root / f"{machine}-3001-{os.getppid()}",  # another serve of this machine, alive
        "killed": root / f"{machine}-3002-{int(dead.stdout)}",  # a serve that was killed
        "elsewhere": root / f"another-host-3001-{int(dead.stdout)}",  # a machine sharing the data folder
    }
    for folder in others.values():
        folder.mkdir(parents=True)
        (folder / "counter_1.db").write_bytes(b"metrics")
    mine = metrics_folder(tmp_path, "fraud", 3003)
    assert mine == root / f"{machine}-3003-{os.getpid()}" and list(mine.iterdir()) == []
    assert {name for name, folder in others.items() if folder.exists()} == {"running", "elsewhere"}
    assert metrics_folder(tmp_path, "shop", 3003).parent.parent.name == "shop"  # pipelines never share one


def test_a_failed_step_is_its_key_and_the_first_lines_of_its_error(
    shop: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    specs, data = shop
    monkeypatch.setenv("DAGSTER_HOME", str(data.parent / "home"))
    command = ["--specs", str(specs), "--data-dir", str(data), "materialize", "shop", "--days", "3", "--no-training"]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 1
    failed = [line.strip() for line in result.output.splitlines() if "FAILED" in line]
    assert failed == [
        f"FAILED shop__raw_orders: no file for 2026-03-03 matches sources.orders.path "
        f"({data.resolve() / 'landing/orders/2026-03-03.csv'})",
        f"FAILED shop__raw_returns: no file for 2026-03-03 matches sources.returns.path "
        f"({data.resolve() / 'landing/returns/2026-03-03.csv'})",
    ]
    assert (
        "Traceback" not in result.output and "Stack Trace" not in result.output and "dagster._core" not in result.output
    )


def test_a_step_error_is_the_exception_of_the_steps_code_not_dagsters_wrapper() -> None:
    from dagster._utils.error import SerializableErrorInfo

    cause = SerializableErrorInfo("builtins.ValueError: bad amount\nline 2\nline 3\nline 4\n", [], "ValueError")
    wrapper = SerializableErrorInfo(
        'dagster._core.errors.DagsterExecutionStepExecutionError: Error occurred while executing op "a":\n',
        ["  File ..."],
        "DagsterExecutionStepExecutionError",
        cause,
    )
    assert step_error(wrapper) == "ValueError: bad amount\n      line 2\n      line 3 [...]"
    assert step_error(None) == "failed"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
