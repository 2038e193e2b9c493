"""`mlops replay` sends a day only to a service that says it serves the named pipeline."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mlops_assets.cli import main
from mlops_assets.core.serving.replay import ReplayError, check_pipeline
from tests.helpers import small_fraud_specs


class FakeService:
    """A stand-in for `mlops serve` on loopback: /models answers `models`; every request's path is recorded."""

    def __init__(self) -> None:
        self.models: Any = {}
        self.paths: list[str] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                service.paths.append(self.path)
                self.rfile.read(int(self.headers.get("content-length", 0)))
                body = json.dumps(service.models if self.path == "/models" else []).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def service() -> Iterator[FakeService]:
    service = FakeService()
    thread = threading.Thread(target=service.server.serve_forever, daemon=True)
    thread.start()
    yield service
    service.server.shutdown()
    service.server.server_close()


def test_the_service_must_name_the_pipeline_it_serves(service: FakeService) -> None:
    service.models = {"pipeline": "fraud", "champion": "3", "challenger": "4"}
    assert check_pipeline(service.url, "fraud") == {"champion": "3", "challenger": "4"}
    with pytest.raises(ReplayError, match=r"serves pipeline 'fraud', not 'shop': give --url of the `mlops serve shop`"):
        check_pipeline(service.url, "shop")
    service.models = {"champion": "3"}  # a bento built before /models named its pipeline
    with pytest.raises(ReplayError, match="does not say which pipeline it serves"):
        check_pipeline(service.url, "fraud")


def test_nothing_listening_is_a_message(service: FakeService) -> None:
    url = service.url
    service.server.shutdown()
    service.server.server_close()
    with pytest.raises(ReplayError, match=r"did not answer .*: is `mlops serve fraud` running there\?"):
        check_pipeline(url, "fraud")


def test_replay_refuses_a_service_of_another_pipeline_before_sending_anything(
    service: FakeService, tmp_path: Path
) -> None:
    specs = small_fraud_specs(
        tmp_path / "specs", **{"refresh_seconds: 10": "allow_replay: true\n  refresh_seconds: 10"}
    )
    service.models = {"pipeline": "shop", "champion": "1"}
    command = ["--specs", str(specs), "--data-dir", str(tmp_path / "data"), "replay", "fraud", "--day", "2026-01-02"]
    result = CliRunner().invoke(main, [*command, "--url", service.url])
    assert result.exit_code == 1, result.output
    assert f"error: {service.url} serves pipeline 'shop', not 'fraud'" in result.output
    assert "Traceback" not in result.output and service.paths == ["/models"]  # no request was sent


def test_replayed_requests_carry_keys_as_text_whatever_type_the_file_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An integer id in the files (a key `mlops new` may choose) is sent as the text the service's keys are, so
    the requests validate against the service's own request model instead of every one being a 400."""
    import importlib
    from datetime import date

    from mlops_assets.core.serving.replay import replay_requests
    from mlops_assets.spec import load_spec
    from tests.helpers import SMALL_SPEC, write_day_files

    text = SMALL_SPEC.replace("user_id: {dtype: string, nullable: false}", "user_id: {dtype: int, nullable: false}")
    (tmp_path / "shop.yaml").write_text(text + "serving: {allow_replay: true}\n")
    spec = load_spec(tmp_path / "shop.yaml")
    day = "user_id,ordered_at,amount,returned,returned_at\n7,2026-03-02T09:00:00,7.0,1,2026-03-03T09:00:00\n"
    write_day_files(tmp_path, "returns", {"2026-03-02": day})
    (request,) = replay_requests(spec, tmp_path, date(2026, 3, 2))
    assert request["user_id"] == "7" and request["amount"] == 7.0
    monkeypatch.setenv("MLOPS_PIPELINE", "fraud")  # the service module serves one pipeline
    service = importlib.import_module("mlops_assets.serving.service")
    service.request_model(spec).model_validate_json(json.dumps(request))  # as the service reads it: strict JSON
