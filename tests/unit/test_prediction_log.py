from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlops_assets.core.serving.prediction_log import PredictionLogWriter, read_day
from tests.helpers import until


def _record(i: int) -> dict[str, object]:
    return {
        "request_id": f"r{i}",
        "timestamp": datetime.now(UTC).isoformat(),
        "entity": {"customer_id": "c"},
        "features": {"x": 1.5, "y": None},
        "request": {"amount": 3.0},
        "model_version": "2",
        "score": 0.5,
        "degraded": i % 2 == 0,
        "reason": "online store timeout" if i % 2 == 0 else None,
        "latency_ms": 2.0,
    }


def test_batches_flush_by_size_by_time_and_on_close(tmp_path: Path) -> None:
    writer = PredictionLogWriter(tmp_path, batch_size=3, flush_interval=0.2)
    today = datetime.now(UTC).date()
    for i in range(4):
        writer.log(_record(i))
    assert read_day(tmp_path, today).height == 3  # one full batch; the fourth waits
    until(lambda: read_day(tmp_path, today).height == 4, what="the flush by time")  # every flush_interval
    writer.log(_record(4))
    writer.close()
    frame = read_day(tmp_path, today)
    assert frame["request_id"].to_list() == [f"r{i}" for i in range(5)]
    assert frame["degraded"].to_list() == [True, False, True, False, True]
    assert frame["features"][0] == '{"x": 1.5, "y": null}'
    assert frame.schema["timestamp"].time_zone is None


def test_an_empty_day_reads_as_an_empty_typed_frame(tmp_path: Path) -> None:
    frame = read_day(tmp_path, datetime(2026, 1, 1).date())
    assert frame.height == 0 and frame.schema["score"].is_float()


def test_each_record_is_filed_under_the_day_of_its_timestamp(tmp_path: Path) -> None:
    writer = PredictionLogWriter(tmp_path, batch_size=100, flush_interval=60)
    replayed = {**_record(0), "timestamp": "2026-03-01T23:59:00+00:00"}
    writer.log(replayed)
    writer.log({**_record(1), "timestamp": datetime(2026, 3, 2, 0, 1, tzinfo=UTC)})
    writer.log(_record(2))
    writer.close()
    assert read_day(tmp_path, datetime(2026, 3, 1).date())["request_id"].to_list() == ["r0"]
    assert read_day(tmp_path, datetime(2026, 3, 2).date())["request_id"].to_list() == ["r1"]
    assert read_day(tmp_path, datetime.now(UTC).date())["request_id"].to_list() == ["r2"]


def test_a_record_written_before_the_reason_was_logged_whole_keeps_its_reason(tmp_path: Path) -> None:
    writer = PredictionLogWriter(tmp_path, batch_size=100, flush_interval=60)
    old = {k: v for k, v in _record(0).items() if k != "reason"} | {"degraded_reason": "online store timeout"}
    writer.log(old)
    writer.log(_record(1))
    writer.close()
    frame = read_day(tmp_path, datetime.now(UTC).date())
    assert frame["reason"].to_list() == ["online store timeout", None] and "degraded_reason" not in frame.columns


def test_a_write_that_fails_fails_no_answer_and_its_records_are_written_once_storage_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "log"
    folder.write_text("")  # a file where the log's folder goes: every write fails, as with a bucket unreachable
    failures: list[int] = []
    writer = PredictionLogWriter(folder, batch_size=2, flush_interval=60, on_failure=failures.append, max_kept=6)
    for i in range(5):
        writer.log(_record(i))  # the second fills a batch whose write fails; the answers never see it
    assert failures == [2]  # while writes fail, a full batch waits for the interval: requests never retry
    writer.flush()  # the interval's flush: still failing, all five kept; the two kept before are not counted again
    assert failures == [2, 3] and "5 records kept in memory" in caplog.text
    for i in range(5, 8):
        writer.log(_record(i))
    writer.flush()  # eight wait, six at most: the two oldest go, and an error says so
    assert failures == [2, 3, 3] and "dropped its 2 oldest records: it keeps 6 at most" in caplog.text
    folder.unlink()
    writer.flush()  # storage is back
    writer.log(_record(8))
    writer.close()
    assert read_day(folder, datetime.now(UTC).date())["request_id"].to_list() == [f"r{i}" for i in range(2, 9)]
