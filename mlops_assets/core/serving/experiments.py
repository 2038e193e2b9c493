"""A/B experiments: which champion and challenger versions are being compared, since when, and how it ended.

An experiment is the A/B test of one champion version against one challenger version, started at a time with the
spec's test settings. At most one runs per pipeline: the running one is a file created exclusively (two starts at
once: one wins, the other is refused), and ending it writes its record to the history before the running file goes,
so a crash in between leaves it running and the end can be repeated.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

RUNNING = "running.json"


class ExperimentError(ValueError):
    """An experiment that cannot start, change or end as asked: the sentence says what runs and what to do."""


@dataclass(frozen=True)
class Experiment:
    id: str
    pipeline: str
    champion: str
    challenger: str
    started_at: str  # ISO date-time, UTC
    started_by: str
    settings: str  # the fingerprint of serving.ab_test when it started: a changed test is another experiment
    ended_at: str | None = None
    ended_by: str | None = None
    outcome: str | None = None  # the decision it ended with, or "stopped: <reason>"

    @property
    def since(self) -> datetime:
        """When it started, as the prediction log's naive UTC timestamps are."""
        return datetime.fromisoformat(self.started_at).astimezone(UTC).replace(tzinfo=None)

    def describe(self) -> str:
        return (
            f"A/B experiment {self.id} (champion {self.champion} against challenger {self.challenger}, started "
            f"{self.started_at} by {self.started_by})"
        )


def running(folder: Path) -> Experiment | None:
    """The pipeline's running experiment, if any."""
    path = folder / RUNNING
    if not path.exists():
        return None
    return _read(path)


def _read(path: Path) -> Experiment:
    """The experiment a record holds; a damaged or hand-edited one is an ExperimentError naming the file."""
    try:
        return Experiment(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:  # not JSON, not an object, fields missing or unknown
        raise ExperimentError(
            f"{path} is not an A/B experiment record ({type(exc).__name__}: {exc}); it was damaged or edited by hand. "
            f"Its fields are {', '.join(Experiment.__dataclass_fields__)}: restore it, or move it away to forget it"
        ) from None


def start(
    folder: Path, pipeline: str, champion: str, challenger: str, settings: str, by: str, at: datetime | None = None
) -> Experiment:
    """Start an experiment (now, or `at`: a replayed past); refused while another runs on the pipeline (overlapping
    experiments would share and confound the traffic)."""
    moment = (at or datetime.now(UTC)).astimezone(UTC) if (at is None or at.tzinfo) else at.replace(tzinfo=UTC)
    experiment = Experiment(uuid.uuid4().hex[:12], pipeline, champion, challenger, moment.isoformat(), by, settings)
    folder.mkdir(parents=True, exist_ok=True)
    temporary = _write_temporary(folder, experiment)
    try:
        os.link(temporary, folder / RUNNING)  # atomic, and fails if one runs: the check and the start are one step
    except FileExistsError:
        current = running(folder)
        raise ExperimentError(
            f"{pipeline!r}: {current.describe() if current else 'an A/B experiment'} is running; two experiments "
            "on one pipeline would share its traffic. End it first: `mlops promote "
            f"{pipeline} --from-ab` once it has decided, or `mlops ab stop {pipeline} --reason TEXT`"
        ) from None
    finally:
        temporary.unlink()
    return experiment


def end(folder: Path, experiment: Experiment, outcome: str, by: str) -> Experiment:
    """End the running experiment with its outcome (kept in the history); ending one that is no longer running (ended
    meanwhile, or another started since) is an ExperimentError."""
    current = running(folder)
    if current is None or current.id != experiment.id:
        raise ExperimentError(f"{experiment.describe()} is not running")
    ended = Experiment(
        **{**asdict(current), "ended_at": datetime.now(UTC).isoformat(), "ended_by": by, "outcome": outcome}
    )
    temporary = _write_temporary(folder, ended)
    os.replace(temporary, folder / f"{ended.id}.json")
    (folder / RUNNING).unlink()
    return ended


def history(folder: Path) -> list[Experiment]:
    """The ended experiments, in the order they ended."""
    ended = [_read(p) for p in folder.glob("*.json") if p.name != RUNNING]
    return sorted(ended, key=lambda e: e.ended_at or "")


def _write_temporary(folder: Path, experiment: Experiment) -> Path:
    temporary = folder / f".{experiment.id}-{uuid.uuid4().hex[:6]}.tmp"
    with open(temporary, "w") as handle:
        handle.write(json.dumps(asdict(experiment), indent=2))
        handle.flush()
        os.fsync(handle.fileno())
    return temporary
