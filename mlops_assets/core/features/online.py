"""The online store: the latest feature row per entity and view, for serving; SQLite (embedded) or Redis.

Rows are those the offline feature function produced (no second implementation): the online path keeps the
latest one per entity. A write never replaces a stored row with an older one, so replays are harmless, and the
TTL is applied when reading: a row past its view's TTL comes back marked stale, never as fresh.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, cast

import polars as pl

from mlops_assets.core.features.views import FEATURE_TIMESTAMP, KNOWN_AT, collect
from mlops_assets.core.lake import PARTITION_COLUMN
from mlops_assets.spec import PipelineSpec, parse_duration

Entity = tuple[str, ...]


@dataclass(frozen=True)
class OnlineRow:
    """One entity's features as served: None values when the entity is unknown, its row is stale, or its row is newer
    than the request (`ahead`: a replayed request older than the store's latest row must not see its future)."""

    entity: Entity
    values: dict[str, Any] | None
    feature_timestamp: datetime | None
    stale: bool
    ahead: bool = False

    @property
    def found(self) -> bool:
        return self.feature_timestamp is not None


class OnlineStore(Protocol):
    def write(self, pipeline: str, view: str, rows: Sequence[tuple[str, str, str]]) -> None:
        """Upsert (entity, feature timestamp ISO, payload JSON), keeping the newer row per entity, atomically."""

    def read(self, pipeline: str, view: str, entities: Sequence[str]) -> list[str | None]:
        """Payloads for a batch of entities in one round trip (None where unknown)."""

    def watermark(self, pipeline: str, view: str) -> str | None: ...

    def set_watermark(self, pipeline: str, view: str, value: str) -> None: ...


def entity_id(values: Sequence[Any]) -> str:
    return "|".join(str(v) for v in values)


def latest_rows(features: pl.LazyFrame, keys: list[str]) -> pl.DataFrame:
    """The latest feature row per entity (what serving would have computed after the entity's last event)."""
    return collect(
        features.drop(PARTITION_COLUMN, KNOWN_AT, strict=False)
        .sort([*keys, FEATURE_TIMESTAMP], maintain_order=True)
        .group_by(keys, maintain_order=True)
        .last()
    )


def encode(frame: pl.DataFrame, keys: list[str]) -> list[tuple[str, str, str]]:
    """(entity id, feature timestamp, JSON payload of the feature values) per row."""
    features = [c for c in frame.columns if c not in (*keys, FEATURE_TIMESTAMP)]
    return [
        (
            entity_id([row[k] for k in keys]),
            row[FEATURE_TIMESTAMP].isoformat(),
            json.dumps({f: row[f] for f in features}),
        )
        for row in frame.iter_rows(named=True)
    ]


def lookup(
    store: OnlineStore, pipeline: str, view: str, entities: Sequence[Entity], ttl: timedelta, now: datetime
) -> list[OnlineRow]:
    """Batch point lookup with the TTL enforced: a row older than `ttl` at `now` is returned stale, and a row newer
    than `now` ahead (the store keeps only the latest row: the one valid at `now` is gone); values withheld in both."""
    payloads = store.read(pipeline, view, [entity_id(e) for e in entities])
    rows = []
    for entity, payload in zip(entities, payloads, strict=True):
        if payload is None:
            rows.append(OnlineRow(entity, None, None, stale=False))
            continue
        stamp, values = payload.split("\n", 1)
        timestamp = datetime.fromisoformat(stamp)
        stale, ahead = now - timestamp > ttl, timestamp > now
        usable = not (stale or ahead)
        rows.append(OnlineRow(entity, json.loads(values) if usable else None, timestamp, stale, ahead))
    return rows


def _use_wal(connection: sqlite3.Connection, timeout: float) -> None:
    """Switch the file to WAL (it stays so). Connections that open a new file at once (parallel steps of one run)
    race for the switch, and SQLite answers the losers 'database is locked' without waiting: they retry."""
    deadline = time.monotonic() + timeout
    while connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            connection.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class SQLiteOnlineStore:
    """The embedded default: one SQLite file, upserts in one transaction, WAL so readers never wait on writers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def _connect(self) -> sqlite3.Connection:
        """This thread's connection, opened (and the schema created) on first use: lookups skip both."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=10)
        _use_wal(connection, timeout=10)
        connection.executescript(
            """
            CREATE TABLE IF NOT EXISTS online_features (
                pipeline TEXT, view TEXT, entity TEXT, feature_timestamp TEXT, payload TEXT,
                PRIMARY KEY (pipeline, view, entity));
            CREATE TABLE IF NOT EXISTS watermarks (pipeline TEXT, view TEXT, value TEXT, PRIMARY KEY (pipeline, view));
            """
        )
        self._local.connection = connection
        return connection

    def write(self, pipeline: str, view: str, rows: Sequence[tuple[str, str, str]]) -> None:
        with self._connect() as connection:
            connection.executemany(
                """INSERT INTO online_features VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (pipeline, view, entity) DO UPDATE
                   SET feature_timestamp = excluded.feature_timestamp, payload = excluded.payload
                   WHERE excluded.feature_timestamp > online_features.feature_timestamp""",
                [(pipeline, view, entity, stamp, payload) for entity, stamp, payload in rows],
            )

    def read(self, pipeline: str, view: str, entities: Sequence[str]) -> list[str | None]:
        if not entities:
            return []
        with self._connect() as connection:
            marks = ",".join("?" * len(entities))
            found = dict(
                connection.execute(
                    "SELECT entity, feature_timestamp || char(10) || payload FROM online_features "
                    f"WHERE pipeline = ? AND view = ? AND entity IN ({marks})",
                    [pipeline, view, *entities],
                ).fetchall()
            )
        return [found.get(e) for e in entities]

    def watermark(self, pipeline: str, view: str) -> str | None:
        with self._connect() as connection:
            row = connection.execute(
                "SELECT value FROM watermarks WHERE pipeline = ? AND view = ?", (pipeline, view)
            ).fetchone()
        return row[0] if row else None

    def set_watermark(self, pipeline: str, view: str, value: str) -> None:
        with self._connect() as connection:
            connection.execute(
                "INSERT INTO watermarks VALUES (?, ?, ?) "
                "ON CONFLICT (pipeline, view) DO UPDATE SET value = excluded.value",
                (pipeline, view, value),
            )


# Keeps the newer row per field: ARGV holds (entity, timestamp, payload) triples; stored values are "ts\npayload".
_UPSERT_NEWER = """
for i = 1, #ARGV, 3 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  local stamp = current and string.match(current, '^[^\\n]*') or nil
  if (not stamp) or ARGV[i + 1] > stamp then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1] .. '\\n' .. ARGV[i + 2])
  end
end
return 1
"""


class RedisOnlineStore:
    """Redis: one hash per pipeline and view, entity -> 'timestamp\\npayload'; batch reads are one HMGET."""

    def __init__(self, url: str, prefix: str = "mlops") -> None:
        import redis

        self.client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5)
        self.prefix = prefix
        self._upsert = self.client.register_script(_UPSERT_NEWER)

    def _key(self, pipeline: str, view: str) -> str:
        return f"{self.prefix}:{pipeline}:{view}"

    def write(self, pipeline: str, view: str, rows: Sequence[tuple[str, str, str]]) -> None:
        # One script call per chunk: each is atomic, and a chunk never blocks Redis for long.
        for start in range(0, len(rows), 2000):
            args = [part for row in rows[start : start + 2000] for part in row]
            self._upsert(keys=[self._key(pipeline, view)], args=args)

    # redis types replies as bytes or str whatever the client; this one decodes them (decode_responses=True).
    def read(self, pipeline: str, view: str, entities: Sequence[str]) -> list[str | None]:
        values = self.client.hmget(self._key(pipeline, view), list(entities)) if entities else []
        return cast("list[str | None]", list(values))

    def watermark(self, pipeline: str, view: str) -> str | None:
        return cast("str | None", self.client.hget(f"{self.prefix}:watermarks", f"{pipeline}:{view}"))

    def set_watermark(self, pipeline: str, view: str, value: str) -> None:
        self.client.hset(f"{self.prefix}:watermarks", f"{pipeline}:{view}", value)


def open_store(url: str) -> OnlineStore:
    """'redis://…' for Redis, 'sqlite:///path' (or a plain path) for the embedded SQLite store."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisOnlineStore(url)
    return SQLiteOnlineStore(Path(url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url))


@dataclass(frozen=True)
class SyncResult:
    entities_written: int
    watermark: str | None


def sync_view(store: OnlineStore, pipeline: str, view: str, features: pl.LazyFrame, keys: list[str]) -> SyncResult:
    """Write the latest row of every entity with rows newer than the view's watermark, then move the watermark.

    A crash between the two leaves the watermark behind: the next sync rewrites the same rows, which the
    newer-only upsert makes harmless.
    """
    mark = store.watermark(pipeline, view)
    if mark is not None:
        since = datetime.fromisoformat(mark)
        features = features.filter(
            (pl.col(PARTITION_COLUMN) >= since.date().isoformat()) & (pl.col(FEATURE_TIMESTAMP) > since)
        )
    latest = latest_rows(features, keys)
    if latest.height == 0:
        return SyncResult(0, mark)
    store.write(pipeline, view, encode(latest, keys))
    # polars types a column's max as any Python literal; feature times are datetimes.
    newest = cast(datetime, latest.get_column(FEATURE_TIMESTAMP).max()).isoformat()
    store.set_watermark(pipeline, view, newest)
    return SyncResult(latest.height, newest)


@dataclass(frozen=True)
class FeatureVector:
    """The model inputs for one request as serving sees them, with what was missing or stale, per view, and the
    feature timestamp of each view's row (None where none was found): the key to the offline row it came from."""

    values: dict[str, Any]
    missing: list[str]
    stale: list[str]
    timestamps: dict[str, str | None] = field(default_factory=dict)
    ahead: list[str] = field(default_factory=list)


def view_rows(
    spec: PipelineSpec, store: OnlineStore, requests: Sequence[Mapping[str, Any]], now: datetime
) -> dict[str, list[OnlineRow]]:
    """One batch lookup per view for all requests, TTL applied."""
    entities = [tuple(str(r[k]) for k in spec.entity.keys) for r in requests]
    return {
        name: lookup(store, spec.view_namespace(name), name, entities, parse_duration(view.ttl), now)
        for name, view in spec.feature_views.items()
    }


def assemble(
    spec: PipelineSpec, requests: Sequence[Mapping[str, Any]], rows: Mapping[str, list[OnlineRow]]
) -> list[FeatureVector]:
    """Request fields plus every view's row; a view with no usable row contributes nulls for its columns."""
    vectors = [FeatureVector({f: r.get(f) for f in spec.request_features}, [], []) for r in requests]
    for view_name, view_rows_ in rows.items():
        declared = spec.feature_views[view_name].feature_names()
        columns = declared or next((list(r.values) for r in view_rows_ if r.values), [])
        for vector, row in zip(vectors, view_rows_, strict=True):
            if not row.found:
                vector.missing.append(view_name)
            elif row.ahead:
                vector.ahead.append(view_name)
            elif row.stale:
                vector.stale.append(view_name)
            vector.values.update(row.values or dict.fromkeys(columns))
            stamp = row.feature_timestamp
            vector.timestamps[view_name] = stamp.isoformat() if row.values is not None and stamp is not None else None
    return vectors


def feature_vectors(
    spec: PipelineSpec, store: OnlineStore, requests: Sequence[Mapping[str, Any]], now: datetime
) -> list[FeatureVector]:
    """Request fields plus every view's online row, nulled past its TTL exactly as the training set nulls them.

    Feature names come from the stored rows, so a user function's columns need no declaration.
    """
    return assemble(spec, requests, view_rows(spec, store, requests, now))


@dataclass(frozen=True)
class ServedVector:
    """A feature vector as served, and whether it is degraded (the online store failed) and why."""

    values: dict[str, Any]
    missing: list[str]
    stale: list[str]
    degraded: bool
    reason: str | None
    timestamps: dict[str, str | None] = field(default_factory=dict)
    ahead: list[str] = field(default_factory=list)


class ResilientFeatures:
    """Online lookups that never hang: a declared timeout, then a bounded cache of recent rows within their TTL.

    When the store fails or is slow, each view's value comes from the cache if this process served that entity
    recently and the row is still within TTL; otherwise the view is missing. Either way the vector is marked
    degraded with the reason, and the next successful lookup refills the cache.
    """

    def __init__(self, spec: PipelineSpec, store: OnlineStore, timeout: float = 0.1, cache_size: int = 10_000) -> None:
        self.spec, self.store, self.timeout, self.cache_size = spec, store, timeout, cache_size
        self._cache: OrderedDict[tuple[str, Entity], tuple[datetime, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="online-lookup")
        # Lookups still running after their timeout hold a slot: when all are taken (a hanging store), requests
        # go to the cache at once instead of queueing behind them without bound.
        self._slots = threading.BoundedSemaphore(4)

    def vectors(self, requests: Sequence[Mapping[str, Any]], now: datetime) -> list[ServedVector]:
        if not self._slots.acquire(blocking=False):
            return self._from_cache(requests, now, "online store saturated (every lookup slot is waiting on it)")
        future = self._pool.submit(self._lookup_all, requests, now)
        future.add_done_callback(lambda _: self._slots.release())
        try:
            looked_up = future.result(timeout=self.timeout)
        except FutureTimeout:
            return self._from_cache(requests, now, f"online store slower than {self.timeout * 1000:.0f} ms")
        except Exception as exc:  # any store failure (connection refused, I/O error) degrades the same way
            return self._from_cache(requests, now, f"online store unavailable ({type(exc).__name__}: {exc})")
        return [ServedVector(v.values, v.missing, v.stale, False, None, v.timestamps, v.ahead) for v in looked_up]

    def _lookup_all(self, requests: Sequence[Mapping[str, Any]], now: datetime) -> list[FeatureVector]:
        rows = view_rows(self.spec, self.store, requests, now)
        with self._lock:
            for view, found in rows.items():
                for row in found:
                    if row.values is not None and row.feature_timestamp is not None:
                        self._cache[(view, row.entity)] = (row.feature_timestamp, row.values)
                        self._cache.move_to_end((view, row.entity))
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return assemble(self.spec, requests, rows)

    def _from_cache(self, requests: Sequence[Mapping[str, Any]], now: datetime, reason: str) -> list[ServedVector]:
        keys = self.spec.entity.keys
        served = []
        for request in requests:
            entity = tuple(str(request[k]) for k in keys)
            values = {f: request.get(f) for f in self.spec.request_features}
            missing: list[str] = []
            timestamps: dict[str, str | None] = {}
            for view, view_spec in self.spec.feature_views.items():
                with self._lock:
                    cached = self._cache.get((view, entity))
                if cached is None or now - cached[0] > parse_duration(view_spec.ttl) or cached[0] > now:
                    missing.append(view)
                    values.update(dict.fromkeys(view_spec.feature_names() or []))
                    timestamps[view] = None
                else:
                    values.update(cached[1])
                    timestamps[view] = cached[0].isoformat()
            detail = f"{reason}; " + (f"no cached features for {missing}" if missing else "features from cache")
            served.append(ServedVector(values, missing, [], True, detail, timestamps))
        return served
