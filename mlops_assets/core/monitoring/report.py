"""The drift report a person opens: one self-contained HTML page per window, plots embedded as PNG."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from mlops_assets.core.markdown import PAGE_STYLE, markdown_table

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _distribution(feature: str, kind: str, reference: pl.Series, current: pl.Series) -> str:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 2.6))
    if kind == "numeric":
        ref, cur = reference.drop_nulls().to_numpy(), current.drop_nulls().to_numpy()
        both = [v for v in (ref, cur) if len(v)]
        if both:
            low = min(float(v.min()) for v in both)
            high = max(float(v.max()) for v in both)
            bins = 40 if high > low else 1
            axis.hist(ref, bins=bins, range=(low, high), density=True, alpha=0.5, label="training (reference)")
            axis.hist(cur, bins=bins, range=(low, high), density=True, alpha=0.5, label="this window")
    else:
        ref_share = reference.fill_null("(null)").value_counts(normalize=True, name="share")
        cur_share = current.fill_null("(null)").value_counts(normalize=True, name="share")
        joined = ref_share.join(cur_share, on=reference.name, how="full", coalesce=True, suffix="_current").fill_null(0)
        joined = joined.sort("share_current", descending=True).head(15)
        labels = [str(v) for v in joined.get_column(reference.name)]
        positions = range(len(labels))
        axis.bar([p - 0.2 for p in positions], joined.get_column("share"), width=0.4, label="training (reference)")
        axis.bar([p + 0.2 for p in positions], joined.get_column("share_current"), width=0.4, label="this window")
        axis.set_xticks(list(positions), labels, rotation=45, ha="right", fontsize=7)
    axis.set_title(feature, fontsize=9)
    axis.legend(fontsize=7)
    image = _png(figure)
    plt.close(figure)
    return image


def _trend(history: pl.DataFrame, features: list[str], statistic: str) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if history.height == 0 or not features:
        return None
    figure, axis = plt.subplots(figsize=(7, 2.8))
    for feature in features:
        rows = history.filter(pl.col("feature") == feature).sort("window")
        axis.plot(rows.get_column("window").to_list(), rows.get_column(statistic).to_list(), marker="o", label=feature)
    axis.set_title(f"{statistic} by window", fontsize=9)
    axis.tick_params(axis="x", labelrotation=45, labelsize=7)
    axis.legend(fontsize=7)
    image = _png(figure)
    plt.close(figure)
    return image


def render(
    title: str,
    stats: pl.DataFrame,
    checks: dict[str, tuple[str, str]],
    reference: pl.DataFrame,
    current: pl.DataFrame,
    history: pl.DataFrame,
    target: Path,
    max_plots: int = 8,
) -> Path:
    """Write the page: checks, the statistics table, reference vs current for the drifted features, trends."""
    moved = stats.filter(pl.col("distribution_level").is_in(["warn", "error"])).sort(
        "psi", descending=True, nulls_last=True
    )
    plotted = [f for f in moved.get_column("feature").to_list() if f in reference.columns][:max_plots]
    kinds = dict(zip(stats.get_column("feature"), stats.get_column("kind"), strict=True))
    images = [_distribution(f, kinds[f], reference.get_column(f), current.get_column(f)) for f in plotted]
    trends = [_trend(history, plotted or moved.get_column("feature").head(5).to_list(), s) for s in ("psi", "ks")]
    table = stats.select(
        "feature",
        "kind",
        "distribution_level",
        "quality_level",
        "ks",
        "psi",
        "null_rate_reference",
        "null_rate_current",
        "unseen_share",
        "current_rows",
    ).with_columns(pl.col(pl.Float64).round(4))
    rows = [{k: html.escape(str(v)) for k, v in r.items()} for r in table.iter_rows(named=True)]
    check_rows = [
        {"check": name, "level": level, "evidence": html.escape(text)} for name, (level, text) in checks.items()
    ]
    parts = [
        f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"{PAGE_STYLE}</head><body>",
        f"<h1>{html.escape(title)}</h1><h2>Checks</h2>",
        _html_table(check_rows),
        "<h2>Statistics (reference: the champion's training set)</h2>",
        _html_table(rows),
        "<h2>Drifted features: training vs this window</h2>",
        *(f"<img src='data:image/png;base64,{i}'>" for i in images),
        "" if images else "<p>No feature drifted.</p>",
        "<h2>Trends across windows</h2>",
        *(f"<img src='data:image/png;base64,{t}'>" for t in trends if t),
        "</body></html>",
    ]
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(".tmp")
    temporary.write_text("\n".join(parts))
    temporary.replace(target)
    return target


def _html_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "<p>(none)</p>"
    header = "".join(f"<th>{h}</th>" for h in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in r.values()) + "</tr>" for r in rows)
    return f"<table><tr>{header}</tr>{body}</table>"


def top_movers(stats: pl.DataFrame, limit: int = 10) -> str:
    """Markdown of the features that moved most (by PSI), for asset metadata."""
    top = stats.sort("psi", descending=True, nulls_last=True).head(limit)
    return markdown_table(
        {
            "feature": r["feature"],
            "level": r["distribution_level"],
            "PSI": "" if r["psi"] is None else f"{r['psi']:.3f}",
            "KS": "" if r["ks"] is None else f"{r['ks']:.3f}",
            "nulls": f"{r['null_rate_reference']:.1%} → {r['null_rate_current']:.1%}",
        }
        for r in top.iter_rows(named=True)
    )
