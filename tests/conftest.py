"""Shared fixtures: a small user pipeline on CSV files, written into a temporary folder."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

SMALL_SPEC = textwrap.dedent(
    """
    name: shop
    start_date: 2026-03-01
    entity: {name: user, keys: [user_id]}
    sources:
      orders:
        path: landing/orders/{date}.csv
        event_timestamp: ts
        max_rejected_share: 0.45
        columns:
          user_id: {dtype: string, nullable: false}
          amount: {dtype: float, nullable: false, min: 0}
          channel: {dtype: string, isin: [web, app]}
          ts: {dtype: datetime, nullable: false}
      returns:
        path: landing/returns/{date}.csv
        event_timestamp: returned_at
        columns:
          user_id: {dtype: string, nullable: false}
          ordered_at: {dtype: datetime, nullable: false}
          amount: {dtype: float}
          returned: {dtype: int, min: 0, max: 1}
          returned_at: {dtype: datetime, nullable: false}
    feature_views:
      user_orders:
        source: orders
        ttl: 2d
        aggregations:
          - {functions: [count], windows: [1d]}
          - {column: amount, functions: [sum, max], windows: [1d]}
    request_features:
      amount: {dtype: float}
    label:
      source: returns
      column: returned
      timestamp: returned_at
      prediction_timestamp: ordered_at
    """
)

ORDERS = {
    "2026-03-01": "user_id,amount,channel,ts\nu1,10.0,web,2026-03-01T08:00:00\nu2,5.5,app,2026-03-01T09:30:00\n"
    "u1,7.0,web,2026-03-01T12:00:00\n",
    "2026-03-02": "user_id,amount,channel,ts\nu1,3.0,app,2026-03-02T10:00:00\nu2,abc,web,2026-03-02T11:00:00\n"
    "u3,-4.0,fax,2026-03-02T12:00:00\nu3,2.0,web,2026-03-02T13:00:00\nu3,8.0,web,2026-03-02T14:00:00\n",
}
RETURNS = {
    "2026-03-01": "user_id,ordered_at,amount,returned,returned_at\n",
    "2026-03-02": "user_id,ordered_at,amount,returned,returned_at\nu1,2026-03-01T12:00:00,7.0,1,2026-03-02T09:00:00\n"
    "u2,2026-03-01T09:30:00,5.5,0,2026-03-02T10:00:00\n",
}


def write_day_files(data_dir: Path, source: str, files: dict[str, str]) -> None:
    folder = data_dir / "landing" / source
    folder.mkdir(parents=True, exist_ok=True)
    for day, text in files.items():
        (folder / f"{day}.csv").write_text(text)


@pytest.fixture
def shop(tmp_path: Path) -> tuple[Path, Path]:
    """(specs folder, data folder) of a tiny CSV pipeline with one bad day of orders."""
    specs, data = tmp_path / "specs", tmp_path / "data"
    specs.mkdir()
    (specs / "shop.yaml").write_text(SMALL_SPEC)
    write_day_files(data, "orders", ORDERS)
    write_day_files(data, "returns", RETURNS)
    return specs, data
