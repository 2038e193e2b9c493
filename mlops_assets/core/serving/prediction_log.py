"""The prediction log: every prediction recorded durably, in batches, with a stated loss bound.

Records are buffered in memory and written as one JSON-lines file per batch, atomically (temporary file, fsync,
rename; in object storage, one PUT of the whole object), when `batch_size` records are waiting or `flush_interval`
seconds have passed. A process killed at any moment loses at most the records not yet flushed: fewer than
`batch_size`, and none older than `flush_interval` seconds (plus the time of one write). Readers only ever see whole
files.

A batch that cannot be written (storage unreachable, disk full) is kept in memory and written again at the next
flush interval; the answer that logged it is never failed by it. While writes fail, the records kept are the ones a
killed process loses too: each failure is logged with their count, and the records it newly kept are reported to
`on_failure`. Past `max_kept` waiting records, the oldest are dropped, and said so in an error.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
from upath import UPath

from mlops_assets.core.lake import Location, matching
from mlops_assets.core.models.modeling import Outputs

log = logging.getLogger(__name__)
# While writes fail, a worker keeps at most this many records in memory (a few hundred MB at most), the newest.
MAX_KEPT = 100_000

LOG_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "request_id": pl.String,
    "timestamp": pl.Datetime("us"),
    "entity": pl.String,
    "features": pl.String,
    "feature_timestamps": pl.String,
    "request": pl.String,
    "model_version": pl.String,
    "score": pl.Float64,  # the probability (binary), the value (regression), the class's probability (multiclass)
    "label": pl.String,  # multiclass: the class answered
    "probabilities": pl.String,  # multiclass: JSON, each class's probability
    "shadow_version": pl.String,
    "shadow_score": pl.Float64,
    "shadow_label": pl.String,
    "shadow_probabilities": pl.String,
    "degraded": pl.Boolean,
    "reason": pl.String,  # the answer's: features missing, stale, withheld (from a replay's future) or degraded
    "latency_ms": pl.Float64,
}


def log_folder(root: Location, pipeline: str) -> Location:
    """Where serving writes a pipeline's prediction log (one folder per day) under the lake's root: the data folder,
    or the lake's prefix in object storage, where the ingesting run reads it with no disk shared with serving."""
    return root / "prediction_log" / pipeline


class PredictionLogWriter:
    """Buffered, batch-flushing writer of prediction records into `folder/<day>/<batch>.jsonl`.

    A record is filed under the UTC day of its `timestamp` (a replayed request of an earlier day lands in that day).
    """

    def __init__(
        self,
        folder: Location,
        batch_size: int = 200,
        flush_interval: float = 1.0,
        on_failure: Callable[[int], None] | None = None,
        max_kept: int = MAX_KEPT,
    ) -> None:
        self.folder = folder
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.on_failure = on_failure  # called with the number of records a failed write newly kept in memory
        self.max_kept = max_kept  # beyond this many waiting records, the oldest are dropped (said in an error)
        self._buffer: list[tuple[date, str]] = []
        self._kept = 0  # the records at the front of the buffer that a failed write kept (counted once)
        self._failing = False  # the last write failed: only the flush interval tries again, never a request
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_periodically, name="prediction-log", daemon=True)
        self._flusher.start()

    def log(self, record: Mapping[str, Any]) -> None:
        line = encode(record)
        day = _day(record.get("timestamp"))
        with self._lock:
            self._buffer.append((day, line))
            full = len(self._buffer) >= self.batch_size and not self._failing
        if full:
            self.flush()

    def flush(self) -> None:
        """Write what is waiting, a batch per day; what cannot be written is kept, in order, for the next flush."""
        with self._lock:
            lines, self._buffer, counted = self._buffer, [], self._kept
            self._kept = 0
        by_day: dict[date, list[str]] = {}
        for day, line in lines:
            by_day.setdefault(day, []).append(line)
        written: set[date] = set()
        try:
            for day, day_lines in by_day.items():
                write_batch(self.folder, day_lines, day)
                written.add(day)
        except Exception as exc:
            kept = [(day, line) for day, line in lines if day not in written]
            with self._lock:
                self._buffer[:0] = kept
                dropped = max(0, len(self._buffer) - self.max_kept)
                del self._buffer[:dropped]
                self._kept = len(kept) - min(dropped, len(kept))
                self._failing, waiting = True, len(self._buffer)
            if dropped:
                log.error("the prediction log dropped its %d oldest records: it keeps %d at most", dropped, waiting)
            log.warning(
                "the prediction log could not be written to %s (%s): %d records kept in memory, written again in "
                "%.3g s; a process stopped before then loses them",
                self.folder,
                exc,
                waiting,
                self.flush_interval,
            )
            if self.on_failure is not None:
                self.on_failure(max(0, len(kept) - counted))
            return
        if lines:
            with self._lock:
                self._failing = False

    def _flush_periodically(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._flusher.join()
        self.flush()
        if self._buffer:
            log.error(
                "the prediction log lost %d records: %s could not be written at shutdown",
                len(self._buffer),
                self.folder,
            )


def _day(timestamp: Any) -> date:
    """The UTC day of a record's timestamp (an ISO string or a datetime); today when it has none."""
    if timestamp is None:
        return datetime.now(UTC).date()
    moment = datetime.fromisoformat(timestamp) if isinstance(timestamp, str) else timestamp
    return (moment.astimezone(UTC) if moment.tzinfo else moment).date()


def encode(record: Mapping[str, Any]) -> str:
    """One JSON line; nested values (entity, features, request) become JSON text columns of their own."""
    flat = {k: json.dumps(v, default=str) if isinstance(v, dict | list) else v for k, v in record.items()}
    return json.dumps(flat, default=str)


def write_batch(folder: Location, lines: list[str], day: date | None = None) -> Location:
    """One batch file, all or nothing: readers see it whole or not at all."""
    target = folder / (day or datetime.now(UTC).date()).isoformat()
    name = f"{datetime.now(UTC):%H%M%S%f}-{uuid.uuid4().hex[:8]}.jsonl"
    text = "\n".join(lines) + "\n"
    if not isinstance(target, Path):  # an object is stored whole by one PUT, or not at all
        (target / name).write_text(text)
        return target / name
    target.mkdir(parents=True, exist_ok=True)
    temporary = target / f".{name}.tmp"
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target / name)
    return target / name


LEGACY_REASON = "degraded_reason"


def read_day(folder: Location, day: date) -> pl.DataFrame:
    """The day's logged predictions, typed; a record found twice (a batch file copied) is kept once. Two records
    of one request id are two answers (a client that reused an id across restarts): both are kept, and counted by
    `duplicate_request_ids`."""
    files = matching(folder / day.isoformat() / "*.jsonl")
    # Records written before the answer's reason was logged whole name it `degraded_reason`: read into `reason`.
    schema = {**{k: pl.String for k in LOG_SCHEMA}, LEGACY_REASON: pl.String}
    sources: list[str | bytes]
    if isinstance(folder, Path):
        sources = [str(f) for f in files]
    else:  # a GET per object, fetched concurrently
        keys = [cast("UPath", f).path for f in files]
        fetched = folder.fs.cat(keys) if keys else {}
        sources = [fetched[key] for key in keys]
    frames = [pl.read_ndjson(source, schema=schema) for source in sources]
    if not frames:
        return pl.DataFrame(schema=LOG_SCHEMA)
    text = pl.concat(frames).with_columns(pl.coalesce("reason", LEGACY_REASON).alias("reason"))
    typed = text.with_columns(
        pl.col("timestamp").str.to_datetime(time_unit="us", time_zone="UTC").dt.replace_time_zone(None),
        pl.col("score", "shadow_score", "latency_ms").cast(pl.Float64),
        pl.col("degraded").str.to_lowercase().eq("true"),
    )
    return typed.unique(maintain_order=True).select(list(LOG_SCHEMA))


def duplicate_request_ids(frame: pl.DataFrame) -> int:
    """Records whose request id an earlier record of the frame already had."""
    return frame.height - frame.get_column("request_id").n_unique()


def degraded_share(frame: pl.DataFrame) -> float:
    """The share of logged answers that were degraded; 0 without any."""
    # A boolean column's mean: a float, None when empty (polars types a mean as any Python literal).
    return float(cast("float | None", frame.get_column("degraded").mean()) or 0.0)


def logged_outputs(
    frame: pl.DataFrame, task: str, score: str = "score", probabilities: str = "probabilities"
) -> Outputs:
    """The model outputs of logged predictions: their scores, or (multiclass) their probabilities by class, the
    classes being every class any of the rows names (a class a row lacks has probability 0)."""
    if task != "multiclass":
        return Outputs(task, frame.get_column(score).cast(pl.Float64).to_numpy())
    rows = [json.loads(text) if text else {} for text in frame.get_column(probabilities)]
    classes = tuple(sorted({c for row in rows for c in row}))
    values = np.array([[row.get(c, 0.0) for c in classes] for row in rows], dtype=float).reshape(
        len(rows), len(classes)
    )
    return Outputs(task, values, classes)
