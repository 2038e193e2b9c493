"""A user-defined feature function, the escape hatch of a feature view: LazyFrame of events -> features."""

import polars as pl


def channel_mix(events: pl.LazyFrame) -> pl.LazyFrame:
    """Per customer and event, the share of online transactions in the trailing 7 days."""
    online = (pl.col("channel") == "online").cast(pl.Float64).fill_null(0.0)
    return events.sort("customer_id", "ts").select(
        "customer_id",
        pl.col("ts").alias("feature_timestamp"),
        online.rolling_mean_by("ts", window_size="7d").over("customer_id").alias("online_share_7d"),
    )
