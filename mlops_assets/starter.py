"""`mlops new`: a starter spec guessed from a user's event file, and the file laid out as daily landing files.

Every guess (entity key, event time, label, types, constraints, feature view) is written into the spec's header
with the evidence behind it, for the user to check and edit; nothing is guessed silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import yaml

LABEL_TIME_HINTS = ("label", "confirm", "resolved", "known", "reported", "outcome")
LABEL_HINTS = ("label", "target", "fraud", "churn", "outcome", "default", "is_", "y")
KEY_HINTS = ("id", "key", "user", "customer", "account", "client", "device", "card", "member")
MAX_CATEGORIES = 20
MAX_AGGREGATED = 5  # numeric columns aggregated in the starter view; the user adds the rest


class StarterError(ValueError):
    """An event file from which no starter spec can be made; the message says what is missing."""


@dataclass(frozen=True)
class Starter:
    spec: dict[str, Any]
    guesses: list[str]
    event_timestamp: str


def read_events(path: Path) -> pl.DataFrame:
    """A Parquet or CSV event file (CSV dates and times parsed where they look like ISO values)."""
    if path.suffix not in (".parquet", ".csv"):
        raise StarterError(f"{path}: expected a .parquet or .csv file")
    if not path.is_file():
        raise StarterError(f"{path}: no such file")
    try:
        frame = pl.read_csv(path, try_parse_dates=True) if path.suffix == ".csv" else pl.read_parquet(path)
    except Exception as exc:  # polars raises several error types for unreadable files; all mean the same here
        raise StarterError(f"{path}: cannot read as {path.suffix[1:]} ({exc})") from exc
    if frame.height == 0:
        raise StarterError(f"{path}: the file has no rows")
    return frame.rename({c: _identifier(c) for c in frame.columns})


def _identifier(column: str) -> str:
    """A column name as spec names must be: lower case, digits and underscores."""
    name = re.sub(r"[^a-z0-9_]+", "_", column.strip().lower()).strip("_")
    return name if re.match(r"^[a-z]", name) else f"c_{name}"


def _hinted(columns: list[str], hints: tuple[str, ...]) -> list[str]:
    """Columns whose name carries a hint first, in file order otherwise."""
    return sorted(columns, key=lambda c: not any(h in c for h in hints))


def _dtype(dtype: pl.DataType) -> str:
    if dtype == pl.Boolean:
        return "bool"
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    if dtype == pl.Date:
        return "date"
    return "string"


def guess_spec(name: str, frame: pl.DataFrame, source_file: Path) -> Starter:
    """The starter spec of pipeline `name` for the events of `frame`, with what was guessed and why."""
    if not re.match(r"^[a-z][a-z0-9_]*$", name):
        raise StarterError(f"pipeline name {name!r}: use lower case letters, digits and underscores")
    rows, guesses = frame.height, []
    times = [c for c, t in frame.schema.items() if isinstance(t, pl.Datetime)]
    if not times:
        raise StarterError(
            f"{source_file}: no column holds date-times (found {frame.columns}); an event file needs the time of "
            "each event, e.g. an ISO column like 2026-01-31T12:00:00"
        )
    # A time that repeats per entity (a sign-up date) varies far less than event times: of the columns at least a
    # fifth as varied as the most varied, the event time is the earliest (a label's time comes later).
    varied = max(frame[c].n_unique() for c in times)
    candidates = [c for c in times if frame[c].n_unique() >= 0.2 * varied]
    event_ts = min(candidates, key=lambda c: frame[c].cast(pl.Int64).mean())
    guesses.append(f"sources.events.event_timestamp: {event_ts} (the earliest of the most varied date-time columns)")
    later = [
        c
        for c in _hinted([c for c in times if c != event_ts], LABEL_TIME_HINTS)
        if frame.filter(pl.col(c) < pl.col(event_ts)).height == 0 and frame.filter(pl.col(c) > pl.col(event_ts)).height
    ]
    label_ts = later[0] if later else event_ts
    guesses.append(
        f"label.timestamp: {label_ts} "
        + ("(never before the event time)" if later else "(no later time found: labels known at the event)")
    )

    binary = [
        c
        for c, t in frame.schema.items()
        if c not in times and (t == pl.Boolean or (t.is_integer() and set(frame[c].drop_nulls().unique()) == {0, 1}))
    ]
    if not binary:
        raise StarterError(
            f"{source_file}: no column is binary (0/1 or true/false) to be the label; the starter spec trains a "
            f"classifier (columns: {frame.columns})"
        )
    label = _hinted(binary, LABEL_HINTS)[0]
    positive = float(frame[label].cast(pl.Float64).mean() or 0.0)
    guesses.append(f"label.column: {label} (binary, {positive:.1%} positive)")

    counts = {c: frame[c].n_unique() for c in frame.columns}
    ids = [c for c, t in frame.schema.items() if counts[c] == rows and (t == pl.String or t.is_integer())]
    request_id = next(iter(_hinted([c for c in ids if c not in (label, event_ts)], KEY_HINTS)), None)
    repeated = [
        c
        for c, t in frame.schema.items()
        if c not in (label, *times, *ids) and (t == pl.String or t.is_integer()) and 1 < counts[c] <= rows // 2
    ]
    named = [c for c in repeated if any(h in c for h in KEY_HINTS)]
    if not named and not [c for c in repeated if frame.schema[c] == pl.String and counts[c] > MAX_CATEGORIES]:
        raise StarterError(
            f"{source_file}: no column looks like an entity key (an id that repeats across events, e.g. a "
            f"customer id); columns: {frame.columns}"
        )
    key = max(named or repeated, key=lambda c: counts[c])
    guesses.append(f"entity.keys: [{key}] ({counts[key]:,} distinct values over {rows:,} events)")
    if request_id:
        guesses.append(f"label.request_id: {request_id} (unique per event: the id a prediction request carries)")

    columns: dict[str, dict[str, Any]] = {}
    for column, dtype in frame.schema.items():
        declared: dict[str, Any] = {"dtype": _dtype(dtype)}
        if frame[column].null_count() == 0:
            declared["nullable"] = False
        if dtype.is_numeric() and column != label and frame[column].min() is not None and frame[column].min() >= 0:
            declared["min"] = 0
        if dtype == pl.String and column not in (key, *ids) and counts[column] <= MAX_CATEGORIES:
            declared["isin"] = sorted(frame[column].drop_nulls().unique().to_list())
        columns[column] = declared
    guesses.append(
        "sources.events.columns: types as read; not nullable where no value is missing; min 0 where no "
        f"value is negative; isin where a text column has at most {MAX_CATEGORIES} values"
    )

    numeric = [c for c, t in frame.schema.items() if t.is_numeric() and c not in (label, key, *ids)]
    categorical = [c for c, d in columns.items() if "isin" in d]
    aggregations: list[dict[str, Any]] = [{"functions": ["count"], "windows": ["1d", "7d"]}]
    aggregations += [{"column": c, "functions": ["sum", "mean", "max"], "windows": ["1d", "7d"]} for c in numeric][
        :MAX_AGGREGATED
    ]
    entity = re.sub(r"_?(id|key)$", "", key) or "entity"
    view = f"{entity}_activity"
    amounts = f", and the sum, mean and max of {', '.join(numeric[:MAX_AGGREGATED])}" if numeric else ""
    guesses.append(f"feature_views.{view}: per {entity}, over the last day and week, the count of events{amounts}")
    guesses.append(f"request_features: {', '.join([*numeric, *categorical]) or 'none'} (known when the event happens)")

    first, last = frame[event_ts].min(), frame[event_ts].max()
    span = max((last.date() - first.date()).days + 1, 1)  # type: ignore[union-attr]
    holdout = max(1, span // 5)
    guesses.append(f"model.holdout: {holdout}d (the last fifth of {span} days)")
    spec = {
        "name": name,
        "description": f"Starter spec guessed by `mlops new` from {source_file.name}: check every guess.",
        "start_date": first.date().isoformat(),  # type: ignore[union-attr]
        "entity": {"name": entity if re.match(r"^[a-z][a-z0-9_]*$", entity) else "entity", "keys": [key]},
        "sources": {
            "events": {
                "path": f"landing/{name}/events/{{date}}.parquet",
                "event_timestamp": event_ts,
                "max_rejected_share": 0.01,
                "columns": columns,
            }
        },
        "feature_views": {view: {"source": "events", "ttl": "7d", "aggregations": aggregations}},
        "request_features": {c: columns[c] for c in [*numeric, *categorical]},
        "label": {
            "source": "events",
            "column": label,
            "timestamp": label_ts,
            "prediction_timestamp": event_ts,
            # The event being scored is itself an event of the source: it must not count in its own features.
            "feature_cutoff": "before",
            **({"request_id": request_id} if request_id else {}),
        },
        "model": {
            "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
            "params": {"max_iter": 100},
            "holdout": f"{holdout}d",
            "seed": 42,
        },
        "promotion": {"metric": "roc_auc", "minimum": 0.5},
    }
    return Starter(spec, guesses, event_ts)


def render(starter: Starter, source_file: Path) -> str:
    """The spec as YAML, its guesses listed first as comments."""
    header = [f"# Starter spec written by `mlops new` from {source_file}.", "# GUESSES to check and edit:"]
    header += [f"#   - {g}" for g in starter.guesses]
    header.append("# Add `owner: team:<your team>` (or an email): the Dagster UI shows it on every asset.")
    header.append("# `mlops check` validates your edits; see the README's spec reference for every field.")
    body = yaml.dump(starter.spec, Dumper=_Plain, sort_keys=False, width=120)
    return "\n".join(header) + "\n" + body


class _Plain(yaml.SafeDumper):
    """YAML for people to edit: a value used twice (a column's declaration as a request feature) is written twice,
    not as an anchor and an alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_days(frame: pl.DataFrame, event_timestamp: str, folder: Path) -> tuple[dict[date, int], int]:
    """The events as daily Parquet files `folder/<day>.parquet`, the layout the spec's source reads: rows a day, and
    how many rows had no event time (kept in `folder/../events_without_a_time.parquet`, not dropped)."""
    folder.mkdir(parents=True, exist_ok=True)
    timeless = frame.filter(pl.col(event_timestamp).is_null())
    if timeless.height:
        timeless.write_parquet(folder.parent / "events_without_a_time.parquet")
    written = {}
    day = pl.col(event_timestamp).dt.date().alias("__day")
    timed = frame.filter(pl.col(event_timestamp).is_not_null()).with_columns(day)
    for (value,), part in timed.group_by("__day", maintain_order=True):
        temporary = folder / f".{value}.parquet.tmp"
        part.drop("__day").sort(event_timestamp).write_parquet(temporary)
        temporary.replace(folder / f"{value}.parquet")  # whole files only: a reader never sees half a day
        written[value] = part.height
    return dict(sorted(written.items())), timeless.height
