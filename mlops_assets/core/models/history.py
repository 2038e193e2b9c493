"""The champion history: which version was live when, rebuilt from what the registry records of each change.

Each promotion and rollback appends a change to the registered model's tags (`champion_change.<stamp>.<version>`:
version, previous, time), keyed by when it was recorded, so that two processes recording at once keep both. Versions
also carry `promoted_at` (the time of their latest promotion) and, once rolled back from, `rolled_back_at`: each of
those is a change too, and adds the changes made before the appended record existed (older registries). The history
is the union of both, one entry per (time, version), in time order (by record key where times tie; older registries
numbered their records `champion_change.<n>`, read alike).

The champion at a moment is the version of the last change at or before it; before the first change there is none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mlops_assets.core.models.aliases import PREVIOUS_CHAMPION_TAG

CHANGE_TAG_PREFIX = "champion_change."
PROMOTED_AT, ROLLED_BACK_AT = "promoted_at", "rolled_back_at"


@dataclass(frozen=True)
class ChampionSince:
    """`version` became the champion `at` (UTC), replacing `previous`."""

    at: datetime
    version: str
    previous: str | None = None


class NoChampionError(LookupError):
    """A moment before the first recorded champion."""


def change_tag(stamp: int, version: str) -> str:
    """The registered-model tag of a change to `version` recorded at `stamp` (nanoseconds since the epoch): a key no
    other change has. (A count of the tags was not: two changes recorded at once counted alike, and one overwrote
    the other.) Zero-padded so that tags sort in order."""
    return f"{CHANGE_TAG_PREFIX}{stamp:020d}.{version}"


def _change(tag: str, text: str) -> tuple[int, ChampionSince]:
    """(order key, change) of a recorded change: its stamp, or an older registry's record number."""
    try:
        record = json.loads(text)
        return int(tag[len(CHANGE_TAG_PREFIX) :].partition(".")[0]), ChampionSince(
            utc(record["at"]), str(record["version"]), record.get("previous")
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(
            f"registered model tag {tag!r} is not a champion change ({type(exc).__name__}: {exc}); expected "
            f'{CHANGE_TAG_PREFIX}<stamp>.<version> = {{"version": ..., "previous": ..., "at": ISO time}}'
        ) from None


def change_record(version: str, previous: str | None, at: str) -> str:
    return json.dumps({"version": version, "previous": previous, "at": at})


def utc(text: str) -> datetime:
    """An ISO time as an aware UTC datetime (a naive one is taken as UTC)."""
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def champion_history(
    model_tags: Mapping[str, str], version_tags: Mapping[str, Mapping[str, str]]
) -> list[ChampionSince]:
    """Every change of the champion, oldest first, from the registered model's tags and each version's tags."""
    numbered: list[tuple[datetime, int, ChampionSince]] = []
    for tag, text in model_tags.items():
        if tag.startswith(CHANGE_TAG_PREFIX):
            key, change = _change(tag, text)
            numbered.append((change.at, key, change))
    seen = {(at, change.version) for at, _, change in numbered}
    for version, tags in version_tags.items():
        derived = []
        if PROMOTED_AT in tags:
            derived.append(ChampionSince(utc(tags[PROMOTED_AT]), version, None))
        if ROLLED_BACK_AT in tags and tags.get(PREVIOUS_CHAMPION_TAG):
            derived.append(ChampionSince(utc(tags[ROLLED_BACK_AT]), tags[PREVIOUS_CHAMPION_TAG], version))
        for change in derived:
            if (change.at, change.version) not in seen:
                seen.add((change.at, change.version))
                numbered.append((change.at, 0, change))
    return [change for _, _, change in sorted(numbered, key=lambda item: (item[0], item[1]))]


def champion_at(history: Sequence[ChampionSince], moment: datetime) -> ChampionSince:
    """The change that made the champion live at `moment` (aware, or naive UTC): the last one at or before it."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    live = [change for change in history if change.at <= moment]
    if not live:
        first = f"the first was at {history[0].at.isoformat()}" if history else "none is recorded"
        raise NoChampionError(f"no version was champion at {moment.isoformat()} ({first})")
    return live[-1]
