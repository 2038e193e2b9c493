"""Seeded generator of card transactions and their delayed fraud labels.

Every day is generated on its own: the output for a day depends only on (config, day), so any
partition can be (re)materialised alone and two runs always agree. Randomness comes from
`np.random.default_rng([seed, day.toordinal()])` plus independent sub-streams keyed the same way
with a stream number, so enabling a scenario never changes the data of days before its start and
only touches the rows it is meant to touch.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

# --- Scenarios and config -------------------------------------------------------------------------------


class _ScenarioBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start: dt.date = Field(description="First day the scenario applies; days before it are unchanged.")

    def active(self, day: dt.date) -> bool:
        return day >= self.start


class AmountShift(_ScenarioBase):
    """Covariate drift: every amount is multiplied by `factor`."""

    kind: Literal["amount_shift"] = "amount_shift"
    factor: float = Field(default=1.5, gt=0, allow_inf_nan=False)


class NewCategory(_ScenarioBase):
    """A merchant_category value never seen in training appears in `share` of the transactions."""

    kind: Literal["new_category"] = "new_category"
    category: str = Field(default="crypto_exchange", min_length=1)
    share: float = Field(default=0.1, ge=0, le=1)


class NullRise(_ScenarioBase):
    """An upstream field starts arriving null at `rate`."""

    kind: Literal["null_rise"] = "null_rise"
    column: Literal["country", "channel", "merchant_category"] = "country"
    rate: float = Field(default=0.2, ge=0, le=1)


class ConceptDrift(_ScenarioBase):
    """Fraud moves from large foreign online purchases to bursts of small domestic POS payments."""

    kind: Literal["concept_drift"] = "concept_drift"


Scenario = Annotated[AmountShift | NewCategory | NullRise | ConceptDrift, Field(discriminator="kind")]


class FraudGeneratorConfig(BaseModel):
    """What to generate; together with the day it fully determines the output."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(default=7, ge=0)
    customers: int = Field(default=5_000, ge=1)
    transactions_per_day: int = Field(
        default=10_000, ge=0, description="Mean; the daily count is Poisson around a weekly pattern."
    )
    scenarios: list[Scenario] = Field(default_factory=list)


# --- Constants --------------------------------------------------------------------------------------------

CATEGORIES: tuple[str, ...] = (
    "grocery",
    "fuel",
    "restaurants",
    "electronics",
    "travel",
    "online_retail",
    "entertainment",
    "health",
)
CHANNELS: tuple[str, ...] = ("online", "pos", "atm")
HOME_COUNTRIES: tuple[str, ...] = ("DE", "FR", "NL", "BE", "ES", "IT", "AT", "PL", "GB", "US")
# Countries card-not-present fraud is typically routed through; a few overlap with home countries.
_FRAUD_COUNTRIES: tuple[str, ...] = ("US", "GB", "BR", "NG", "RO", "UA", "CN", "IN")
COUNTRIES: tuple[str, ...] = tuple(dict.fromkeys(HOME_COUNTRIES + _FRAUD_COUNTRIES))

_HOME_WEIGHTS = np.array([0.22, 0.18, 0.12, 0.08, 0.1, 0.1, 0.05, 0.07, 0.05, 0.03])
_CATEGORY_WEIGHTS = np.array([0.26, 0.1, 0.16, 0.06, 0.05, 0.17, 0.1, 0.1])
_CATEGORY_AMOUNT = np.array([1.0, 1.3, 0.8, 3.0, 4.0, 1.3, 0.9, 1.1])
_CHANNEL_WEIGHTS = np.array([0.35, 0.6, 0.05])
# How plausible each channel is for each category (rows: CATEGORIES, columns: CHANNELS).
_CHANNEL_FIT = np.array(
    [
        [0.3, 1.0, 0.3],
        [0.02, 1.0, 0.2],
        [0.2, 1.0, 0.1],
        [1.0, 0.6, 0.01],
        [1.0, 0.3, 0.01],
        [1.0, 0.02, 0.0],
        [0.6, 1.0, 0.2],
        [0.2, 1.0, 0.1],
    ]
)
# Legitimate activity follows the day; pre-drift fraud does not, which is one more learnable signal.
_HOUR_WEIGHTS = np.array(
    [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.5, 4, 4.5, 5, 5.5, 6.5, 6, 5.5, 5.5, 6, 6.5, 7, 6.5, 5.5, 4, 3, 2],
    dtype=float,
)
_HOUR_CUM = np.cumsum(_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
_WEEKLY = np.array([0.94, 0.95, 0.97, 1.0, 1.1, 1.16, 0.88])
_WEEKLY = _WEEKLY / _WEEKLY.mean()

_FRAUD_CATEGORIES_BEFORE = np.array([CATEGORIES.index(c) for c in ("electronics", "travel", "online_retail")])
_FRAUD_CATEGORIES_AFTER = np.array(
    [CATEGORIES.index(c) for c in ("grocery", "fuel", "restaurants", "entertainment", "health")]
)
# New compromise episodes per day, per expected transaction: tuned for a fraud rate of about 2 %.
_EPISODES_PER_TRANSACTION = 0.0014
_MAX_EPISODE_DAYS = 4
_LATE_SHARE = 0.02

_US_PER_SECOND = 1_000_000
_US_PER_HOUR = 3_600 * _US_PER_SECOND
_US_PER_DAY = 24 * _US_PER_HOUR
_EPOCH = dt.date(1970, 1, 1)

FRAUD_DELAY_DAYS = (1, 10)
LEGIT_DELAY_DAYS = (3, 14)
# Labels confirmed on day D come from transactions of days D-LABEL_LOOKBACK_DAYS..D.
LABEL_LOOKBACK_DAYS = max(FRAUD_DELAY_DAYS[1], LEGIT_DELAY_DAYS[1])

# Sub-stream numbers; non-zero because SeedSequence ignores trailing zeros in the entropy.
_STREAM_EPISODES = 1
_STREAM_FRAUD = 2
_STREAM_ORDER = 3
_STREAM_LABELS = 4
_STREAM_SCENARIO = 100

TRANSACTIONS_SCHEMA: dict[str, pl.DataType] = {
    "transaction_id": pl.String(),
    "customer_id": pl.String(),
    "merchant_category": pl.String(),
    "amount": pl.Float64(),
    "channel": pl.String(),
    "country": pl.String(),
    "ts": pl.Datetime("us"),
    "ingested_at": pl.Datetime("us"),
}
LABELS_SCHEMA: dict[str, pl.DataType] = {
    "transaction_id": pl.String(),
    "customer_id": pl.String(),
    "transaction_ts": pl.Datetime("us"),
    "amount": pl.Float64(),
    "merchant_category": pl.String(),
    "channel": pl.String(),
    "country": pl.String(),
    "is_fraud": pl.Int8(),
    "confirmed_at": pl.Datetime("us"),
}


# --- Customer profiles ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Profiles:
    home: np.ndarray  # index into COUNTRIES
    log_typical: np.ndarray  # log of the customer's typical amount
    amount_sigma: np.ndarray
    category_cum: np.ndarray  # (customers, categories) cumulative preference
    channel_pref: np.ndarray  # (customers, channels)
    activity_cum: np.ndarray  # cumulative share of the day's transactions


@functools.lru_cache(maxsize=8)
def _profiles(seed: int, customers: int) -> _Profiles:
    """Stable customer profiles: they depend on the seed and population only, never on the day."""
    rng = np.random.default_rng([seed, customers, 0xC057])
    home = rng.choice(len(HOME_COUNTRIES), size=customers, p=_HOME_WEIGHTS)
    log_typical = rng.normal(np.log(35.0), 0.6, size=customers)
    amount_sigma = rng.uniform(0.45, 0.85, size=customers)
    categories = rng.dirichlet(_CATEGORY_WEIGHTS * 4, size=customers)
    channels = rng.dirichlet(_CHANNEL_WEIGHTS * 6, size=customers)
    activity = rng.gamma(2.0, size=customers)
    profiles = _Profiles(
        home=home,
        log_typical=log_typical,
        amount_sigma=amount_sigma,
        category_cum=np.cumsum(categories, axis=1),
        channel_pref=channels,
        activity_cum=np.cumsum(activity / activity.sum()),
    )
    for array in vars(profiles).values():
        array.flags.writeable = False  # shared through the cache, so nobody may mutate them
    return profiles


# --- Sampling helpers -------------------------------------------------------------------------------------


def _rng(config: FraudGeneratorConfig, day: dt.date, stream: int | None = None) -> np.random.Generator:
    key = [config.seed, day.toordinal()]
    return np.random.default_rng(key if stream is None else [*key, stream])


def _pick_rows(rng: np.random.Generator, cum: np.ndarray) -> np.ndarray:
    """One index per row of a (rows, k) cumulative weight matrix; rows need not be normalised."""
    u = (1.0 - rng.random(cum.shape[0])) * cum[:, -1]  # in (0, total], so zero weights are never picked
    picked: np.ndarray = (cum < u[:, None]).sum(axis=1)
    return picked


def _pick(rng: np.random.Generator, cum: np.ndarray, size: int) -> np.ndarray:
    """Indices drawn from one normalised cumulative distribution."""
    return np.minimum(np.searchsorted(cum, rng.random(size), side="right"), len(cum) - 1)


def _day_start_us(day: dt.date) -> int:
    return (day - _EPOCH).days * _US_PER_DAY


def _foreign_country(rng: np.random.Generator, home: np.ndarray, pool: tuple[str, ...]) -> np.ndarray:
    """A country from `pool` that differs from each row's home country."""
    codes = np.array([COUNTRIES.index(c) for c in pool])
    index = rng.integers(0, len(codes), size=len(home))
    # The next pool entry is foreign whenever the drawn one is home, because the pool has no duplicates.
    return np.where(codes[index] == home, codes[(index + 1) % len(codes)], codes[index])


def _ingestion_delay_us(rng: np.random.Generator, n: int) -> np.ndarray:
    """Seconds to minutes for most rows, hours for a few: late data must be handled downstream."""
    fast = np.exp(rng.normal(np.log(20.0), 1.2, size=n)) * _US_PER_SECOND
    fast = np.minimum(fast, 30 * 60 * _US_PER_SECOND)
    late = rng.uniform(1, 12, size=n) * _US_PER_HOUR
    return np.where(rng.random(n) < _LATE_SHARE, late, fast).astype(np.int64)


@dataclass
class _Rows:
    customer: np.ndarray
    category: np.ndarray
    channel: np.ndarray
    country: np.ndarray
    amount: np.ndarray  # unrounded, so scenarios act before rounding
    ts: np.ndarray  # microseconds since the epoch
    delay: np.ndarray
    is_fraud: np.ndarray


def _legit_rows(config: FraudGeneratorConfig, day: dt.date, profiles: _Profiles) -> _Rows:
    rng = _rng(config, day)
    n = int(rng.poisson(config.transactions_per_day * _WEEKLY[day.weekday()]))
    customer = _pick(rng, profiles.activity_cum, n)
    category = _pick_rows(rng, profiles.category_cum[customer])
    channel = _pick_rows(rng, np.cumsum(profiles.channel_pref[customer] * _CHANNEL_FIT[category], axis=1))
    home = profiles.home[customer]
    abroad = rng.random(n) < 0.03
    country = home.copy()
    country[abroad] = _foreign_country(rng, home[abroad], HOME_COUNTRIES)
    log_amount = profiles.log_typical[customer] + profiles.amount_sigma[customer] * rng.standard_normal(n)
    amount = np.exp(log_amount) * _CATEGORY_AMOUNT[category]
    hour = _pick(rng, _HOUR_CUM, n)
    ts = _day_start_us(day) + hour * _US_PER_HOUR + rng.integers(0, _US_PER_HOUR, size=n)
    return _Rows(customer, category, channel, country, amount, ts, _ingestion_delay_us(rng, n), np.zeros(n, bool))


def _compromised(config: FraudGeneratorConfig, day: dt.date) -> np.ndarray:
    """Customers whose card is compromised on `day`, from episodes that started on the days before."""
    active = []
    for lag in range(_MAX_EPISODE_DAYS):
        rng = _rng(config, day - dt.timedelta(days=lag), _STREAM_EPISODES)
        starts = int(rng.poisson(config.transactions_per_day * _EPISODES_PER_TRANSACTION))
        customer = rng.integers(0, config.customers, size=starts)
        days = rng.integers(1, _MAX_EPISODE_DAYS + 1, size=starts)
        active.append(customer[days > lag])
    return np.concatenate(active)


def _fraud_rows(config: FraudGeneratorConfig, day: dt.date, profiles: _Profiles, drifted: bool) -> _Rows:
    """Bursts of fraud on compromised cards: several payments within an hour or two."""
    rng = _rng(config, day, _STREAM_FRAUD)
    victims = _compromised(config, day)
    bursts = np.repeat(victims, 1 + (rng.random(len(victims)) < 0.3))
    size = (3 if drifted else 2) + rng.poisson(3.0 if drifted else 2.5, size=len(bursts))
    span = rng.uniform(10 * 60, 2 * 3_600, size=len(bursts)) * _US_PER_SECOND
    if drifted:  # blends into daytime shopping
        start = rng.uniform(8 * _US_PER_HOUR, 20 * _US_PER_HOUR, size=len(bursts))
    else:
        start = rng.uniform(0, _US_PER_DAY - span)
    customer = np.repeat(bursts, size)
    n = len(customer)
    offset = np.repeat(start, size) + rng.random(n) * np.repeat(span, size)
    ts = _day_start_us(day) + np.minimum(offset.astype(np.int64), _US_PER_DAY - 1)
    home = profiles.home[customer]
    typical = np.exp(profiles.log_typical[customer])
    any_category = rng.integers(0, len(CATEGORIES), size=n)
    if drifted:
        foreign = rng.random(n) < 0.08
        channel = _pick(rng, np.cumsum([0.1, 0.85, 0.05]), n)
        usual = _FRAUD_CATEGORIES_AFTER[rng.integers(0, len(_FRAUD_CATEGORIES_AFTER), size=n)]
        amount = np.maximum(typical * np.exp(rng.normal(np.log(0.3), 0.4, size=n)), 1.0)
    else:
        foreign = rng.random(n) < 0.8
        channel = _pick(rng, np.cumsum([0.85, 0.15, 0.0]), n)
        usual = _FRAUD_CATEGORIES_BEFORE[_pick(rng, np.cumsum([0.45, 0.25, 0.3]), n)]
        amount = typical * np.exp(rng.normal(np.log(6.0), 0.5, size=n))
    category = np.where(rng.random(n) < 0.9, usual, any_category)
    country = home.copy()
    country[foreign] = _foreign_country(rng, home[foreign], _FRAUD_COUNTRIES)
    return _Rows(customer, category, channel, country, amount, ts, _ingestion_delay_us(rng, n), np.ones(n, bool))


def _concat(a: _Rows, b: _Rows) -> _Rows:
    return _Rows(**{name: np.concatenate([getattr(a, name), getattr(b, name)]) for name in vars(a)})


def _take(rows: _Rows, index: np.ndarray) -> _Rows:
    return _Rows(**{name: value[index] for name, value in vars(rows).items()})


def _strings(values: tuple[str, ...], codes: np.ndarray, null: np.ndarray | None) -> pl.Series:
    series = pl.Series(values=list(values), dtype=pl.String).gather(codes)
    if null is not None and null.any():
        series = series.scatter(np.flatnonzero(null), None)
    return series


def _transactions_with_fraud(config: FraudGeneratorConfig, day: dt.date) -> pl.DataFrame:
    """The day's transactions plus the `is_fraud` flag the labels are derived from.

    Cached because labels for consecutive days re-read the same 15 transaction days (one spare entry
    makes walking backwards work too); the result is a pure function of its key, and callers only ever
    receive derived frames, never the cached one.
    """
    return _cached_day(config.model_dump_json(), day)


@functools.lru_cache(maxsize=LABEL_LOOKBACK_DAYS + 2)
def _cached_day(config_json: str, day: dt.date) -> pl.DataFrame:
    return _build_day(FraudGeneratorConfig.model_validate_json(config_json), day)


def _build_day(config: FraudGeneratorConfig, day: dt.date) -> pl.DataFrame:
    profiles = _profiles(config.seed, config.customers)
    drifted = any(isinstance(s, ConceptDrift) and s.active(day) for s in config.scenarios)
    rows = _concat(_legit_rows(config, day, profiles), _fraud_rows(config, day, profiles, drifted))
    n = len(rows.customer)
    # Shuffle so that neither row order nor transaction id tells fraud (appended last) from the rest.
    rows = _take(rows, _rng(config, day, _STREAM_ORDER).permutation(n))
    categories = CATEGORIES
    nulls: dict[str, np.ndarray] = {}
    for index, scenario in enumerate(config.scenarios):
        if not scenario.active(day):
            continue
        rng = _rng(config, day, _STREAM_SCENARIO + index)
        match scenario:
            case AmountShift(factor=factor):
                rows.amount = rows.amount * factor
            case NewCategory(category=category, share=share):
                categories = (*categories, category)
                rows.category = np.where(rng.random(n) < share, len(categories) - 1, rows.category)
            case NullRise(column=column, rate=rate):
                nulls[column] = nulls.get(column, np.zeros(n, bool)) | (rng.random(n) < rate)

    ts = pl.Series(rows.ts, dtype=pl.Int64)
    frame = pl.DataFrame(
        {
            "customer": rows.customer,
            "merchant_category": _strings(categories, rows.category, nulls.get("merchant_category")),
            "amount": np.maximum(np.round(rows.amount, 2), 0.01),
            "channel": _strings(CHANNELS, rows.channel, nulls.get("channel")),
            "country": _strings(COUNTRIES, rows.country, nulls.get("country")),
            "ts": ts.cast(pl.Datetime("us")),
            "ingested_at": (ts + rows.delay).cast(pl.Datetime("us")),
            "is_fraud": rows.is_fraud,
        }
    )
    return frame.select(
        (pl.lit(f"t{day:%Y%m%d}-") + pl.int_range(n, dtype=pl.Int64).cast(pl.String).str.zfill(7)).alias(
            "transaction_id"
        ),
        (pl.lit("c") + pl.col("customer").cast(pl.String).str.zfill(6)).alias("customer_id"),
        pl.exclude("customer"),
    )


# --- Public API -------------------------------------------------------------------------------------------


def _check_day(day: dt.date) -> None:
    # A datetime is a date too, but would silently key caches and ids differently from the plain date.
    if isinstance(day, dt.datetime) or not isinstance(day, dt.date):
        raise TypeError(f"day must be a datetime.date, got {type(day).__name__}: {day!r}")


def transactions_for_day(config: FraudGeneratorConfig, day: dt.date) -> pl.DataFrame:
    """The card transactions that happened on `day`, as the payment system would emit them."""
    _check_day(day)
    return _transactions_with_fraud(config, day).drop("is_fraud")


def labels_for_day(config: FraudGeneratorConfig, day: dt.date) -> pl.DataFrame:
    """Fraud labels confirmed on `day`: each transaction is labeled exactly once, days after it happened."""
    _check_day(day)
    start, end = _day_start_us(day), _day_start_us(day) + _US_PER_DAY
    parts = []
    # Oldest day first, so that the cache evicts the day that the next label day no longer needs.
    for lag in range(LABEL_LOOKBACK_DAYS, -1, -1):
        tx_day = day - dt.timedelta(days=lag)
        tx = _transactions_with_fraud(config, tx_day)
        # Drawn in the transaction's own sub-stream, so a transaction's delay is the same from any label day.
        u = _rng(config, tx_day, _STREAM_LABELS).random(tx.height)
        is_fraud = tx["is_fraud"].to_numpy()
        low = np.where(is_fraud, FRAUD_DELAY_DAYS[0], LEGIT_DELAY_DAYS[0]) * _US_PER_DAY
        high = np.where(is_fraud, FRAUD_DELAY_DAYS[1], LEGIT_DELAY_DAYS[1]) * _US_PER_DAY
        confirmed = tx["ts"].cast(pl.Int64).to_numpy() + (low + u * (high - low)).astype(np.int64)
        keep = (confirmed >= start) & (confirmed < end)
        parts.append(tx.filter(keep).with_columns(confirmed_at=pl.Series(confirmed[keep]).cast(pl.Datetime("us"))))
    labels = pl.concat(parts).select(
        "transaction_id",
        "customer_id",
        pl.col("ts").alias("transaction_ts"),
        "amount",
        "merchant_category",
        "channel",
        "country",
        pl.col("is_fraud").cast(pl.Int8),
        "confirmed_at",
    )
    return labels.sort("confirmed_at", "transaction_id")


TABLES: dict[str, Callable[[FraudGeneratorConfig, dt.date], pl.DataFrame]] = {
    "transactions": transactions_for_day,
    "labels": labels_for_day,
}


def write_day(config: FraudGeneratorConfig, table: str, day: dt.date, path: Path) -> int:
    """Write one day of `table` to Parquet atomically, so readers never see a half-written file."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; valid tables: {', '.join(sorted(TABLES))}")
    frame = TABLES[table](config, day)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        frame.write_parquet(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return frame.height


class FraudTables:
    """The demo's generator plugin, named in specs as `mlops_assets.demo.generator:fraud_tables`: card transactions
    and their fraud labels, one deterministic day at a time, with drift scenarios."""

    config = FraudGeneratorConfig
    tables = tuple(TABLES)

    def __call__(self, params: dict[str, Any], table: str, day: dt.date, path: Path) -> int:
        return write_day(FraudGeneratorConfig.model_validate(params), table, day, path)


fraud_tables = FraudTables()
