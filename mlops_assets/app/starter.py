"""`mlops new`: a starter spec guessed from a user's event file, and the file laid out as daily landing files.

Every guess (how a column was read, event time, label and task, entity key, types, constraints, feature view,
holdout, promotion gate) is written into the spec's header with the evidence behind it and the candidates it was
chosen over; every column the spec does not use is listed with the reason. Nothing is guessed silently.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import polars as pl
import yaml

from mlops_assets.core.lake import Location, write_whole
from mlops_assets.spec import MODEL_OUTPUT_TOKENS, name_tokens

# Names are matched word by word (split on `_` and camelCase), never as substrings: `y` is not in `y_pred`.
LABEL_NAMES = frozenset({"y", "y_true", "ytrue", "label", "target", "class", "outcome"})
LABEL_WORDS = frozenset(
    {"label", "target", "outcome", "repaid", "fraud", "fraudulent", "churn", "churned", "default", "defaulted"}
    | {"converted", "returned", "late", "cancelled", "clicked", "purchased", "approved", "survived"}
)
LABEL_TIME_WORDS = frozenset({"label", "labelled", "labeled", "confirm", "confirmed", "resolved", "known"})
LABEL_TIME_WORDS |= {"reported", "outcome", "settled", "closed"}
KEY_WORDS = frozenset({"id", "key", "uuid", "user", "customer", "account", "client", "device", "card", "member"})
TEXT_BOOLEANS = (("false", "true"), ("no", "yes"))  # read as booleans, whatever their case

MAX_CATEGORIES = 20
MAX_CLASSES = 10  # a text column with more values is not guessed as a label's classes
MAX_AGGREGATED = 5  # numeric columns aggregated in the starter view; the user adds the rest
MAX_HOLDOUT_DAYS = 30
# Windows and TTLs are rounded up to one of these, so the spec reads like a person wrote it.
DURATIONS = ("1h", "6h", "1d", "3d", "7d", "14d", "30d", "60d", "90d", "180d", "365d")
TASK_ORDER = {"binary": 0, "multiclass": 1, "regression": 2}
ESTIMATORS = {
    "binary": "sklearn.ensemble.HistGradientBoostingClassifier",
    "multiclass": "sklearn.ensemble.HistGradientBoostingClassifier",
    "regression": "sklearn.ensemble.HistGradientBoostingRegressor",
}


class StarterError(ValueError):
    """An event file from which no starter spec can be made; the message says what is missing."""


class EventFile(pl.DataFrame):
    """An event file's rows, with how columns stored as text were read (`notes`, by column) for the spec's header."""

    notes: dict[str, str]


@dataclass(frozen=True)
class Candidate:
    """A column that could be the label, the task it would make and the evidence for both."""

    column: str
    task: str
    evidence: str
    hint: str = ""  # what in its name says "label"
    strength: int = 0  # 2: the name is a label's name; 1: a word of it is; 0: nothing in the name

    def describe(self) -> str:
        named = f"; {self.hint}" if self.hint else ""
        return f"{self.column} ({self.evidence} → {self.task}{named})"


@dataclass(frozen=True)
class Starter:
    spec: dict[str, Any]
    guesses: list[str]
    event_timestamp: str
    left_out: dict[str, str] = field(default_factory=dict)  # column -> why the spec does not use it


def read_events(path: Path) -> EventFile:
    """A Parquet or CSV event file, columns named as specs name them; text date-times and booleans are parsed the
    same way in both formats, and date-times with a zone are converted to UTC."""
    if path.suffix not in (".parquet", ".csv"):
        raise StarterError(f"{path}: expected a .parquet or .csv file")
    if not path.is_file():
        raise StarterError(f"{path}: no such file")
    try:
        frame = pl.read_csv(path, infer_schema_length=10_000) if path.suffix == ".csv" else pl.read_parquet(path)
    except Exception as exc:  # polars raises several error types for unreadable files; all mean the same here
        raise StarterError(f"{path}: cannot read as {path.suffix[1:]} ({exc})") from exc
    if frame.height == 0:
        raise StarterError(f"{path}: the file has no rows")
    frame = frame.rename({c: _identifier(c) for c in frame.columns})
    notes: dict[str, str] = {}
    columns = []
    for column in frame.iter_columns():
        parsed, note = _read_column(column, stored_as_text=path.suffix == ".parquet")
        columns.append(parsed)
        if note:
            notes[column.name] = note
    events = EventFile(pl.DataFrame(columns))
    events.notes = notes
    return events


_DATE = r"\d{4}-\d{2}-\d{2}"
_OFFSET = r"(Z|[+-]\d{2}:?\d{2})$"
_DATETIME = rf"^{_DATE}[ T]\d{{2}}:\d{{2}}(:\d{{2}}(\.\d+)?)?{_OFFSET[:-1]}?$"


def _read_column(column: pl.Series, stored_as_text: bool) -> tuple[pl.Series, str | None]:
    """A column with ISO dates, date-times or booleans held as text parsed (a zone converted to UTC), and a note of
    what was done where a person might not expect it (CSV's own true/false and naive date-times need none)."""
    if isinstance(column.dtype, pl.Datetime) and column.dtype.time_zone is not None:
        return _utc(column), f"stored in time zone {column.dtype.time_zone}: converted to UTC"
    values = column.drop_nulls()
    if column.dtype != pl.String or values.len() == 0:
        return column, None
    lowered = column.str.to_lowercase()
    distinct = lowered.drop_nulls().unique()
    for false, true in TEXT_BOOLEANS:
        if distinct.len() <= 2 and set(distinct) <= {false, true}:
            note = f"text {false}/{true} read as booleans ({true} = true)"
            parsed = lowered.replace_strict({true: True, false: False}, default=None, return_dtype=pl.Boolean)
            return parsed, note if true == "yes" or stored_as_text else None
    if values.str.contains(rf"^{_DATE}$").all():
        return column.str.to_date(), "text dates read as dates" if stored_as_text else None
    if not values.str.contains(_DATETIME).all():
        return column, None
    zones = values.str.extract(_OFFSET).drop_nulls()
    if 0 < zones.len() < values.len():
        return column, "text date-times, some with a zone and some without: left as text (give each a zone)"
    parsed = column.str.to_datetime(time_unit="us", strict=False)
    if parsed.null_count() > column.null_count():
        return column, "text that looks like date-times but does not parse: left as text"
    if zones.len():
        zone = ", ".join(sorted({"UTC" if z == "Z" else z for z in zones}))
        return _utc(parsed), f"text date-times in zone {zone}: converted to UTC"
    return parsed, "text date-times read as date-times (no zone given)" if stored_as_text else None


def _utc(column: pl.Series) -> pl.Series:
    return column.dt.convert_time_zone("UTC").dt.replace_time_zone(None)


def _identifier(column: str) -> str:
    """A column name as spec names must be: lower case, digits and underscores (`isFraud` becomes `is_fraud`)."""
    name = "_".join(name_tokens(column))
    return name if re.match(r"^[a-z]", name) else f"c_{name}"


def _hinted(columns: list[str], words: frozenset[str]) -> list[str]:
    """Columns with one of `words` in their name first, in file order otherwise."""
    return sorted(columns, key=lambda c: not words & set(name_tokens(c)))


def _output_words(column: str) -> str:
    """The words naming `column` as another model's output (`pred` in `y_pred`), as the spec's warnings find them."""
    return ", ".join(repr(w) for w in sorted(MODEL_OUTPUT_TOKENS & set(name_tokens(column))))


def _show(values: list[Any]) -> str:
    """Values as a set the way the file holds them: {0.0, 1.0}, {false, true}, {'no', 'yes'}."""
    return "{" + ", ".join(_value(v) for v in values) + "}"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


def label_candidate(series: pl.Series) -> Candidate | None:
    """`series` as a label: two values 0/1, true/false or yes/no (binary, whatever their type), a few text classes
    (multiclass) or numbers (regression); None if it can be none of them."""
    values = sorted(series.drop_nulls().unique().to_list())
    dtype, column = series.dtype, series.name
    if len(values) == 2 and (
        dtype == pl.Boolean
        or (dtype.is_numeric() and values == [0, 1])
        or (dtype == pl.String and tuple(sorted(v.lower() for v in values)) in TEXT_BOOLEANS)
    ):
        task, evidence = "binary", f"values {_show(values)}"
    elif dtype == pl.String and 2 <= len(values) <= MAX_CLASSES:
        task, evidence = "multiclass", f"{len(values)} text classes {_show(values)}"
    elif dtype.is_numeric() and len(values) > 2:
        task, evidence = "regression", f"numbers, {len(values):,} distinct values"
    else:
        return None
    words = name_tokens(column) or [column]
    asks = task == "binary" and words[0] in ("is", "has", "was")  # `is_fraud`: a yes/no question
    hinted = [w for w in words[asks:] if w in LABEL_WORDS]
    if "_".join(words) in LABEL_NAMES or (hinted and len(hinted) == len(words[asks:])):
        return Candidate(column, task, evidence, f"named like a label ({column!r})", 2)
    if hinted or asks:
        return Candidate(column, task, evidence, f"the word {(hinted or words)[0]!r} in its name", 1)
    return Candidate(column, task, evidence)


def label_candidates(frame: pl.DataFrame, columns: list[str]) -> list[Candidate]:
    """The label candidates among `columns`, best first: a label's name, then binary, multiclass, regression."""
    found = [c for c in (label_candidate(frame[column]) for column in columns) if c is not None]
    return sorted(found, key=lambda c: (-c.strength, TASK_ORDER[c.task], columns.index(c.column)))


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


def _duration(seconds: float, at_most: float | None = None) -> str:
    """The shortest of DURATIONS covering `seconds`, but none longer than `at_most` (if one fits)."""
    lengths = {d: _seconds(d) for d in DURATIONS}
    chosen = next((d for d in DURATIONS if lengths[d] >= seconds), DURATIONS[-1])
    if at_most is not None and lengths[chosen] > at_most:
        chosen = max((d for d in DURATIONS if lengths[d] <= at_most), key=lengths.__getitem__, default=DURATIONS[0])
    return chosen


def _seconds(duration: str) -> float:
    value, unit = int(duration[:-1]), duration[-1]
    return value * {"m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]


def _human(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} seconds"


def _gaps(frame: pl.DataFrame, key: str, event_ts: str) -> pl.Series:
    """Seconds between consecutive events of each entity."""
    gaps = frame.sort(key, event_ts).select(pl.col(event_ts).diff().over(key).dt.total_seconds(fractional=True))
    return gaps.to_series().drop_nulls()


def guess_spec(name: str, frame: pl.DataFrame, source_file: Path) -> Starter:
    """The starter spec of pipeline `name` for the events of `frame`, with what was guessed and why."""
    if not re.match(r"^[a-z][a-z0-9_]*$", name):
        raise StarterError(f"pipeline name {name!r}: use lower case letters, digits and underscores")
    rows, schema = frame.height, frame.schema
    notes = frame.notes if isinstance(frame, EventFile) else {}
    guesses = [f"{column}: {note}" for column, note in notes.items()]
    event_ts, label_ts, said = _times(frame, source_file)
    guesses += said

    counts = {c: frame[c].n_unique() for c in frame.columns}
    # Another model's output (`y_pred`, `fraud_proba`) is never a label or a feature: it would learn that model.
    outputs = {c: w for c in frame.columns if (w := _output_words(c))}
    ids = [c for c, t in schema.items() if counts[c] == rows and (t == pl.String or t.is_integer())]
    times = [c for c, t in schema.items() if isinstance(t, pl.Datetime) or t == pl.Date]
    usable = [c for c in frame.columns if c not in (*times, *outputs, *ids)]
    ranked = label_candidates(frame, usable)
    if not ranked:
        raise StarterError(
            f"{source_file}: no column can be the label: one with two values (0/1, true/false, yes/no), a few text "
            f"classes or numbers, not named like another model's output (columns: {frame.columns})"
        )
    label, task = ranked[0].column, ranked[0].task
    guesses.append(f"label.column: {label} ({_label_evidence(frame[label], ranked[0])})")
    if task == "binary" and (label in notes or schema[label] == pl.String):
        guesses.append(
            f"label.column: {label} is declared bool: ingest reads the text true/false and yes/no (in any case, and "
            "t/f, y/n, 1/0) of a bool column as booleans, so files you add may hold it as text or as booleans"
        )
    guesses.append(f"model.task: {task} (`{label}`: {ranked[0].evidence} → {task}): {ESTIMATORS[task]}")
    if ranked[1:]:
        others = "; ".join(c.describe() for c in ranked[1:])
        guesses.append(
            f"other label candidates (to use one, edit label.column, and model.task if it differs): {others}"
        )

    request_id = next(iter(_hinted([c for c in ids if c != label], KEY_WORDS)), None)
    key, key_evidence = _entity_key(frame, [c for c in usable if c != label], counts, source_file, request_id)
    guesses.append(f"entity.keys: [{key}] {key_evidence}")
    if request_id:
        guesses.append(f"label.request_id: {request_id} (unique per event: the id a prediction request carries)")
    columns = _declared(frame, label, [key, *ids], counts)
    if task == "binary" and schema[label] == pl.String:  # yes/no text: ingest reads a bool column's text as booleans
        columns[label] = {k: v for k, v in columns[label].items() if k != "isin"} | {"dtype": "bool"}
    guesses.append(
        "sources.events.columns: types as read; not nullable where no value is missing; min 0 where no "
        f"value is negative; isin where a text column has at most {MAX_CATEGORIES} values"
    )

    # The label and what is known only with it (its time) are never inputs; nor are keys, ids and other models'
    # outputs (none of them is in `usable`), nor columns of one value.
    inputs = [c for c in usable if c not in (label, label_ts, key) and frame[c].drop_nulls().n_unique() > 1]
    numeric = [c for c in inputs if schema[c].is_numeric()]
    features = [*numeric, *[c for c in inputs if schema[c] == pl.Boolean], *[c for c in inputs if "isin" in columns[c]]]
    entity = re.sub(r"_?(id|key)$", "", key) or "entity"
    entity = entity if re.match(r"^[a-z][a-z0-9_]*$", entity) else "entity"
    # polars types a min or max as any Python literal: this column's are date-times.
    first, last = cast(datetime, frame[event_ts].min()), cast(datetime, frame[event_ts].max())
    span = max((last.date() - first.date()).days + 1, 1)
    view, said = _activity_view(frame, entity, key, event_ts, numeric[:MAX_AGGREGATED], span)
    guesses += said
    guesses.append(f"request_features: {', '.join(features) or 'none'} (known when the event happens)")
    holdout = max(1, min(MAX_HOLDOUT_DAYS, span // 5))
    held_out = frame.filter(pl.col(event_ts) > last - timedelta(days=holdout)).height
    guesses.append(
        f"model.holdout: {holdout}d (the most recent {holdout} of the {span} days, {held_out:,} events here; at most a "
        f"fifth of the days and {MAX_HOLDOUT_DAYS}d, because it is cut from the days you materialize: materialize "
        f"at least {5 * holdout} days, or shorten it)"
    )
    promotion, why = _gate(frame[label], task)
    guesses.append(f"promotion: {why}")

    used = {event_ts, label_ts, label, key, *([request_id] if request_id else []), *features}
    left_out = {c: _left_out_reason(frame, c, outputs, ids) for c in frame.columns if c not in used}
    by_reason: dict[str, list[str]] = {}
    for column, reason in left_out.items():
        by_reason.setdefault(reason, []).append(column)
    guesses += [f"left out: {', '.join(cs)} ({reason})" for reason, cs in by_reason.items()]

    spec = {
        "name": name,
        "description": f"Starter spec guessed by `mlops new` from {source_file.name}: check every guess.",
        "start_date": first.date().isoformat(),
        "entity": {"name": entity, "keys": [key]},
        "sources": {
            "events": {
                "path": f"landing/{name}/events/{{date}}.parquet",
                "event_timestamp": event_ts,
                "max_rejected_share": 0.01,
                "columns": columns,
            }
        },
        "feature_views": {f"{entity}_activity": view},
        "request_features": {c: columns[c] for c in features},
        "label": {
            "source": "events",
            "column": label,
            "timestamp": label_ts,
            "prediction_timestamp": event_ts,
            # Features as the online store holds them when a prediction is made: it is synced after each day, so
            # training on fresher rows than that would be training-serving skew.
            "feature_cutoff": "previous_day",
            **({"request_id": request_id} if request_id else {}),
        },
        "model": {
            "task": task,
            "estimator": ESTIMATORS[task],
            "params": {"max_iter": 100},
            "holdout": f"{holdout}d",
            "seed": 42,
        },
        "promotion": promotion,
    }
    return Starter(spec, guesses, event_ts, left_out)


def _times(frame: pl.DataFrame, source_file: Path) -> tuple[str, str, list[str]]:
    """The event time and the label's time, with the guesses that say why."""
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
    event_ts = min(candidates, key=lambda c: cast(float, frame[c].cast(pl.Int64).mean()))
    later = [
        c
        for c in _hinted([c for c in times if c != event_ts], LABEL_TIME_WORDS)
        if frame.filter(pl.col(c) < pl.col(event_ts)).height == 0 and frame.filter(pl.col(c) > pl.col(event_ts)).height
    ]
    label_ts = later[0] if later else event_ts
    return (
        event_ts,
        label_ts,
        [
            f"sources.events.event_timestamp: {event_ts} (the earliest of the most varied date-time columns)",
            f"label.timestamp: {label_ts} "
            + ("(never before the event time)" if later else "(no later time found: labels known at the event)"),
        ],
    )


def _declared(frame: pl.DataFrame, label: str, keys: list[str], counts: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Every column's declaration: its type, not nullable where nothing is missing, min 0 where nothing is
    negative, the allowed values of a text column with few (keys and ids excepted)."""
    columns: dict[str, dict[str, Any]] = {}
    for column, dtype in frame.schema.items():
        declared: dict[str, Any] = {"dtype": _dtype(dtype)}
        if frame[column].null_count() == 0:
            declared["nullable"] = False
        if dtype.is_numeric() and column != label:
            low = cast("float | None", frame[column].min())  # a number (polars types a min as any Python literal)
            if low is not None and low >= 0:
                declared["min"] = 0
        if dtype == pl.String and column not in keys and counts[column] <= MAX_CATEGORIES:
            declared["isin"] = sorted(frame[column].drop_nulls().unique().to_list())
        columns[column] = declared
    return columns


def _activity_view(
    frame: pl.DataFrame, entity: str, key: str, event_ts: str, aggregated: list[str], span: int
) -> tuple[dict[str, Any], list[str]]:
    """The starter feature view: counts (and sums, means, maxima of `aggregated`) over windows sized by the gaps
    between an entity's events, with a TTL covering 90% of the gaps; and the guesses that say so."""
    gaps = _gaps(frame, key, event_ts)
    middle = cast("float | None", gaps.median())  # seconds (polars types a median as any Python literal)
    median, p90 = (float(middle or 0), float(gaps.quantile(0.9) or 0)) if gaps.len() else (86400.0, 86400.0)
    # Served from rows of the days before (the online store is synced after each day): windows of at least a day,
    # and a TTL a day longer than 90% of the gaps, at least two days (yesterday's last row, late in today).
    windows = list(dict.fromkeys(_duration(max(g, 86400), at_most=span * 86400) for g in (median, 5 * median)))
    ttl = _duration(max(p90 + 86400, 2 * 86400))
    aggregations: list[dict[str, Any]] = [{"functions": ["count"], "windows": windows}]
    aggregations += [{"column": c, "functions": ["sum", "mean", "max"], "windows": windows} for c in aggregated]
    amounts = f", and the sum, mean and max of {', '.join(aggregated)}" if aggregated else ""
    view = f"feature_views.{entity}_activity"
    return {"source": "events", "ttl": ttl, "aggregations": aggregations}, [
        f"{view}: per {entity}, over the last {' and '.join(windows)}, the count of events{amounts} (the median gap "
        f"between an entity's events is {_human(median)}: the shorter window covers it, the longer about five; at "
        f"least a day, at most the {span} days of the file)",
        f"{view}.ttl: {ttl} (90% of the gaps between an entity's events are at most {_human(p90)}, and a day more: "
        "a prediction is served the rows of the days before its own, as the online store is synced after each day)",
        "label.feature_cutoff: previous_day (training joins each prediction to the rows the online store holds "
        "when it is made; windows are therefore at least a day)",
    ]


def _label_evidence(series: pl.Series, chosen: Candidate) -> str:
    """What the chosen label holds, in the words of its task, and why it was chosen."""
    named = f"; {chosen.hint}" if chosen.hint else ""
    if chosen.task == "binary":
        answers = series.cast(pl.String).str.to_lowercase()
        positive = cast("float | None", answers.is_in(["1", "1.0", "true", "yes"]).mean()) or 0.0
        return f"{chosen.evidence}, {positive:.1%} positive{named}"
    if chosen.task == "multiclass":
        shares = series.drop_nulls().value_counts(normalize=True, sort=True, name="share")
        classes = ", ".join(f"{v} {s:.0%}" for v, s in shares.iter_rows())
        return f"{chosen.evidence}: {classes}{named}"
    mean, deviation = cast(float, series.mean()), cast(float, series.std(ddof=0))  # a regression label: numbers
    return f"{chosen.evidence}, mean {mean:,.4g}, standard deviation {deviation:,.4g}{named}"


def _gate(series: pl.Series, task: str) -> tuple[dict[str, Any], str]:
    """The promotion gate a starter model must pass: better than a guess that knows nothing, with its reason."""
    if task == "binary":
        return {"metric": "roc_auc", "minimum": 0.5}, "roc_auc at least 0.5 (better than chance)"
    if task == "multiclass":
        classes = series.drop_nulls().n_unique()
        floor = round(1 / classes, 3)
        return {"metric": "macro_f1", "minimum": floor}, (
            f"macro_f1 at least {floor} (1/{classes} for {classes} classes: better than picking a class at random)"
        )
    spread = float(f"{float(cast('float | None', series.std(ddof=0)) or 0.0):.4g}")
    return {"metric": "rmse", "minimum": spread}, (
        f"rmse at most {spread:,} (the label's standard deviation: better than always predicting its mean)"
    )


def _entity_key(
    frame: pl.DataFrame, columns: list[str], counts: dict[str, int], source_file: Path, event_id: str | None
) -> tuple[str, str]:
    """The column the features are computed per, and the evidence: an id repeating across events or, for a file
    with none, a text column with a few repeating values standing in as a segment. Without either, the error says
    which columns a key could be derived from, and how to declare a pipeline of request features only."""
    rows, schema = frame.height, frame.schema
    repeated = [c for c in columns if (schema[c] == pl.String or schema[c].is_integer()) and 1 < counts[c] <= rows // 2]
    named = [c for c in repeated if KEY_WORDS & set(name_tokens(c))]
    texts = [c for c in repeated if schema[c] == pl.String and counts[c] > MAX_CATEGORIES]
    if named or texts:
        key = max(named or texts, key=counts.__getitem__)
        return key, f"({counts[key]:,} distinct values over {rows:,} events)"
    segments = [c for c in columns if schema[c] == pl.String and 2 <= counts[c] <= MAX_CATEGORIES]
    if not segments:
        few = sorted((c for c in columns if 2 <= counts[c] <= MAX_CATEGORIES), key=counts.__getitem__)
        derive = (
            "derive one from a column whose few values repeat, "
            + ", ".join(f"{c} ({counts[c]} values, {_dtype(schema[c])})" for c in few)
            + ": add it to the file as text (a segment of it, or of several) and run `mlops new` again"
            if few
            else f"no column has at most {MAX_CATEGORIES} values to derive a segment from: add a column saying who or "
            "what each event is about"
        )
        alone = (
            f"`entity: {{name: event, keys: [{event_id}]}}` (each event its own entity, {event_id} unique per event), "
            "`feature_views: {}` and every input under request_features"
            if event_id
            else "a column unique per event as `entity.keys` (add one: the file has none), `feature_views: {}` and "
            "every input under request_features"
        )
        raise StarterError(
            f"{source_file}: no column looks like an entity key (an id that repeats across events, e.g. a customer "
            f"id), and no text column with at most {MAX_CATEGORIES} values can stand in as a segment. Two ways "
            f"forward: (1) a key: {derive}; (2) a pipeline of request features only, without features of past "
            f"events: write the spec with {alone} (columns: {frame.columns})"
        )
    key = max(segments, key=counts.__getitem__)
    return key, (
        f"(no column repeats like an entity id, e.g. a customer id: the ids are unique per event. The text column "
        f"{key} ({counts[key]} values, the most of the text columns with at most {MAX_CATEGORIES}) stands in as a "
        f"segment: the features are the recent activity of the event's {key}, and {key} itself is no model input. "
        f"If your events are about someone or something that recurs, add its id and make it the key)"
    )


def _left_out_reason(frame: pl.DataFrame, column: str, outputs: dict[str, str], ids: list[str]) -> str:
    """Why the starter spec does not use `column`, in words a person can act on."""
    dtype = frame.schema[column]
    if column in outputs:
        reason = f"named like another model's output ({outputs[column]}): never a label or a feature"
        if outputs[column] in ("'score'", "'scores'"):  # a bureau's score may be an input known at request time
            reason += "; if it is an input known when a prediction is requested, add it to request_features"
        return reason
    if isinstance(dtype, pl.Datetime) or dtype == pl.Date:
        return "a date or time: no model input; a feature function can derive features from it"
    if column in ids:
        return "unique per event, like an id: nothing to learn across events"
    if frame[column].drop_nulls().n_unique() <= 1:
        return "a single value: nothing to learn" if frame[column].null_count() < frame.height else "no values"
    if dtype == pl.String:
        return f"text with more than {MAX_CATEGORIES} values: too many for a category (a key of a view of its own?)"
    return f"of type {dtype}: no model input"


def render(starter: Starter, source_file: Path) -> str:
    """The spec as YAML, its guesses listed first as comments."""
    header = [f"# Starter spec written by `mlops new` from {source_file}.", "# GUESSES to check and edit:"]
    for guess in starter.guesses:
        header += textwrap.wrap(
            guess,
            116,
            initial_indent="#   - ",
            subsequent_indent="#       ",
            break_long_words=False,
            break_on_hyphens=False,
        )
    header.append("# Add `owner: team:<your team>` (or an email): the Dagster UI shows it on every asset.")
    header.append("# `mlops check` validates your edits; see docs/spec-reference.md for every field.")
    body = yaml.dump(starter.spec, Dumper=_Plain, sort_keys=False, width=120, allow_unicode=True)
    return "\n".join(header) + "\n" + body


class _Plain(yaml.SafeDumper):
    """YAML for people to edit: a value used twice (a column's declaration as a request feature) is written twice,
    not as an anchor and an alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_days(frame: pl.DataFrame, event_timestamp: str, folder: Location) -> tuple[dict[date, int], int]:
    """The events as daily Parquet files `folder/<day>.parquet` (a folder, or a prefix in object storage), the layout
    the spec's source reads: rows a day, and how many rows had no event time (kept in
    `folder/../events_without_a_time.parquet`, not dropped). Whole files only: a reader never sees half a day."""
    timeless = frame.filter(pl.col(event_timestamp).is_null())
    if timeless.height:
        write_whole(timeless, folder.parent / "events_without_a_time.parquet")
    written = {}
    day = pl.col(event_timestamp).dt.date().alias("__day")
    timed = frame.filter(pl.col(event_timestamp).is_not_null()).with_columns(day)
    for (value,), part in timed.group_by("__day", maintain_order=True):
        write_whole(part.drop("__day").sort(event_timestamp), folder / f"{value}.parquet")
        written[value] = part.height
    return dict(sorted(written.items())), timeless.height


@dataclass(frozen=True)
class NewPipeline:
    spec_file: Path
    guesses: list[str]
    landing: Location  # where its events were laid out as daily files (the lake's landing folder or prefix)
    days: dict[date, int]  # events per day
    timeless: int  # events without an event time, kept beside the daily files


def new_pipeline(specs_dir: Path, lake: Location, pipeline: str, events: Path, force: bool = False) -> NewPipeline:
    """A starter spec guessed from an event file, written with its guesses, and the events laid out under the lake
    (the data folder, or its prefix in object storage) as the daily files the spec's source reads; the spec written
    must load."""
    from mlops_assets.spec import load_spec

    target = specs_dir / f"{pipeline}.yaml"
    if target.exists() and not force:
        raise StarterError(f"{target} exists; --force replaces it")
    frame = read_events(events)
    starter = guess_spec(pipeline, frame, events)
    landing = lake / "landing" / pipeline / "events"
    days, timeless = write_days(frame, starter.event_timestamp, landing)
    specs_dir.mkdir(parents=True, exist_ok=True)
    target.write_text(render(starter, events))
    load_spec(target)
    return NewPipeline(target, starter.guesses, landing, days, timeless)
