"""Past events replayed as live traffic: a day of a source's files sent to a served pipeline, each request at its
own time (the spec's `serving.allow_replay`), so that its prediction log and drift report can be graded as of then."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import polars as pl

from mlops_assets.core.ingest.files import source_files
from mlops_assets.core.lake import Location, io_path
from mlops_assets.spec import PipelineSpec

BATCH = 100


class ReplayError(ValueError):
    """Nothing to replay, or a service that will not take the replay; the message says which and what to do."""


@dataclass
class ReplaySummary:
    sent: int = 0
    versions: Counter[str] = field(default_factory=Counter)
    degraded: int = 0


def replay_requests(
    spec: PipelineSpec, data_dir: Location, day: date, sample: int | None = None
) -> list[dict[str, Any]]:
    """The day's events of the label source as prediction requests: entity keys, request features, the request id
    and the time the prediction was made (a seeded sample of `sample` of them, in time order)."""
    label = spec.label
    source = spec.sources[label.source]
    files = source_files(source, data_dir, day)
    if not files:
        raise ReplayError(f"no files of source {label.source!r} for {day} ({source.path}): nothing to replay")
    read = pl.read_csv if source.file_format == "csv" else pl.read_parquet
    frame = pl.concat([read(io_path(f)) for f in files], how="diagonal_relaxed")
    at = label.prediction_timestamp if label.prediction_timestamp in frame.columns else source.event_timestamp
    if sample is not None and sample < frame.height:
        frame = frame.sample(sample, seed=day.toordinal())
    fields = [c for c in [*spec.entity.keys, *spec.request_features] if c in frame.columns]
    requests = []
    for row in frame.sort(at).to_dicts():
        moment = row[at] if isinstance(row[at], datetime) else datetime.fromisoformat(str(row[at]))
        request = {f: row[f] for f in fields} | {"timestamp": moment.isoformat()}
        # Keys travel as text over HTTP (the online store reads them so), whatever type the file holds them in.
        request |= {k: str(row[k]) for k in spec.entity.keys if row.get(k) is not None}
        if label.request_id and row.get(label.request_id) is not None:
            request["request_id"] = str(row[label.request_id])
        requests.append(request)
    return requests


def check_pipeline(url: str, pipeline: str, api_key: str | None = None) -> dict[str, str]:
    """The live versions of the service at `url`, once it says it serves `pipeline`; a ReplayError naming the
    pipeline that answered otherwise (another `mlops serve` on that port would file the requests in its own log)."""
    try:
        headers = {"content-type": "application/json", **({"x-api-key": api_key} if api_key else {})}
        request = urllib.request.Request(f"{url}/models", b"{}", headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            models = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise ReplayError(f"{url}/models answered 401: set the service's API key in this shell too") from None
        raise ReplayError(f"{url}/models answered {exc.code}: is `mlops serve` running there?") from None
    except (OSError, ValueError) as exc:
        raise ReplayError(f"{url} did not answer ({exc}): is `mlops serve {pipeline}` running there?") from None
    served = models.get("pipeline") if isinstance(models, dict) else None
    if served is None:
        raise ReplayError(
            f"{url} does not say which pipeline it serves (a bento built before /models named it): "
            f"rebuild it with `mlops materialize {pipeline}` and restart `mlops serve`"
        )
    if served != pipeline:
        raise ReplayError(
            f"{url} serves pipeline {served!r}, not {pipeline!r}: give --url of the `mlops serve {pipeline}` service"
        )
    return {alias: version for alias, version in models.items() if alias != "pipeline"}


def send(url: str, requests: list[dict[str, Any]], api_key: str | None = None) -> ReplaySummary:
    """POST the requests to `url`/predict_batch, a batch at a time; what answered and how."""
    summary = ReplaySummary()
    headers = {"content-type": "application/json", **({"x-api-key": api_key} if api_key else {})}
    for start in range(0, len(requests), BATCH):
        body = json.dumps({"requests": requests[start : start + BATCH]}, default=str).encode()
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{url}/predict_batch", body, headers), timeout=60) as r:
                answers = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            hint = " (set serving.allow_replay: true in the spec to replay past events)" if exc.code == 400 else ""
            raise ReplayError(f"{url}/predict_batch answered {exc.code}: {detail}{hint}") from None
        except OSError as exc:
            raise ReplayError(f"{url} did not answer ({exc}): is `mlops serve` running there?") from None
        summary.sent += len(answers)
        summary.versions.update(a["model_version"] for a in answers)
        summary.degraded += sum(bool(a["degraded"]) for a in answers)
    return summary
