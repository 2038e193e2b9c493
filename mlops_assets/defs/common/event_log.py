"""Dagster's SQLite event log, writing each batch of asset events in one transaction per database.

A run over a range of days records one materialization (and one planned materialization) per asset and day: a
540-day backfill of five daily assets is 5,400 events. Dagster's SQLite storage opens, commits and closes both of
its databases for every event (tens of milliseconds each on a small disk); given DAGSTER_EVENT_BATCH_SIZE, Dagster
hands the events of one output (or of a run's plan) over together, and this storage writes them at once, as
PostgreSQL's storage does. What is stored is what `store_event` would have stored, event by event.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._core.events import ASSET_EVENTS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._serdes import ConfigurableClassData

# What makes Dagster hand events over in batches (read by Dagster when each event is logged); a run's materialized
# partitions of an asset are one batch up to this size.
BATCH_SIZE_ENV = "DAGSTER_EVENT_BATCH_SIZE"
BATCH_SIZE = "1000"


class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's SQLite event log (`base_dir` by default where Dagster keeps it: $DAGSTER_HOME/history/runs)."""

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {"base_dir": dg.Field(dg.StringSource, is_required=False)}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> BatchedSqliteEventLogStorage:
        base_dir = config_value.get("base_dir") or os.path.join(os.environ["DAGSTER_HOME"], "history", "runs")
        return cls(base_dir, inst_data=inst_data)

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._tables: set[str] = set()
        super().__init__(base_dir, inst_data=inst_data)

    def has_table(self, table_name: str) -> bool:
        # Asked for every asset event with tags, each time on a new connection; a table, once there, stays.
        if table_name not in self._tables:
            if not super().has_table(table_name):
                return False
            self._tables.add(table_name)
        return True

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """Asset events of one run in one transaction on the run's database and one on the index, each serialized
        once; other events (asset check plans) one by one."""
        assets = [e for e in events if e.dagster_event_type in ASSET_EVENTS]
        if len({e.run_id for e in assets}) > 1:  # Dagster batches within a run; anything else the slow way
            return super().store_event_batch(events)
        if assets:
            rows = [self._event_to_row(event) for event in assets]
            with self.run_connection(assets[0].run_id) as conn:
                conn.execute(SqlEventLogStorageTable.insert().values(rows))
            with self.index_transaction() as conn:
                ids = [_inserted(conn.execute(SqlEventLogStorageTable.insert().values(**row))) for row in rows]
                self._store_asset_event_tags(conn, assets, ids)
                # An event sets the columns of its kind in its asset's row, whatever they held: of the events of one
                # asset and kind, the last decides, and the others need not be written (nor serialized again).
                last = {(e.get_dagster_event().asset_key, e.dagster_event_type): i for i, e in enumerate(assets)}
                for i in sorted(last.values()):
                    self._store_asset_event(conn, assets[i], ids[i])
        for event in events:
            if event.dagster_event_type not in ASSET_EVENTS:
                self.store_event(event)


def _inserted(result: Any) -> int:
    key = result.inserted_primary_key
    assert key is not None, "an insert of one row returns its key"
    return int(key[0])
