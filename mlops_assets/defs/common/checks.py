"""The row-validation check every raw and feature table carries: pandera failures graded by rejected share."""

import dagster as dg

from mlops_assets.core.ingest.validation import REASONS_COLUMN, Split, reason_counts
from mlops_assets.core.markdown import markdown_table

ROWS_VALID = "rows_valid"


def rows_valid_spec(key: dg.AssetKey, quarantine: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        ROWS_VALID,
        asset=key,
        blocking=True,
        description=f"Rows failing the pandera schema go to {quarantine.to_user_string()}; "
        "fails (ERROR, blocking downstream) when their share exceeds the spec's max_rejected_share.",
    )


def grade_rows(key: dg.AssetKey, split: Split, max_share: float, days: list[str]) -> dg.AssetCheckResult:
    """Pass when every row is valid, WARN when some were quarantined, ERROR above the spec's threshold."""
    share = split.rejected_share
    total = split.accepted.height + split.rejected.height
    if total == 0:
        passed, severity, verdict = False, dg.AssetCheckSeverity.WARN, "the partition is empty"
    elif share > max_share:
        passed, severity = False, dg.AssetCheckSeverity.ERROR
        verdict = f"{share:.2%} of rows rejected, above the threshold {max_share:.2%}"
    elif split.rejected.height:
        passed, severity = False, dg.AssetCheckSeverity.WARN
        verdict = f"{share:.2%} of rows rejected (threshold {max_share:.2%}); they are in quarantine"
    else:
        passed, severity, verdict = True, dg.AssetCheckSeverity.ERROR, "all rows valid"
    sample_columns = [*[c for c in split.rejected.columns if c != REASONS_COLUMN][:6], REASONS_COLUMN]
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=ROWS_VALID,
        passed=passed,
        severity=severity,
        description=verdict,
        metadata={
            "input_rows": total,
            "accepted_rows": split.accepted.height,
            "rejected_rows": split.rejected.height,
            "rejected_share": share,
            "max_rejected_share": max_share,
            "partitions": ", ".join(days) if len(days) <= 3 else f"{days[0]} .. {days[-1]} ({len(days)} days)",
            "failures_by_reason": dg.MetadataValue.md(markdown_table(reason_counts(split.rejected).to_dicts())),
            "sample_rejected_rows": dg.MetadataValue.md(
                markdown_table(split.rejected.select(sample_columns).head(5).to_dicts())
            ),
        },
    )
