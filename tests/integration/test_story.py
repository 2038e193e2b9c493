"""`mlops demo`, the README's main job, at a small scale: the whole lifecycle runs by itself and tells it truthfully.

The demo runs once per session (the `demo` fixture); this file and the UI test share it in one xdist group."""

import re

import pytest

from mlops_assets.core.lake import scan_table, table_path
from mlops_assets.core.models.registry import open_registry
from tests.helpers import Demo

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("demo")]


def test_the_demo_tells_the_whole_lifecycle(demo: Demo) -> None:
    tmp_path, output = demo.root, demo.output
    assert "from 2026-01-22 amounts double (covariate drift) and fraud turns to small domestic POS" in output
    story = output[output.index("What happened") :]
    days = sorted(set(re.findall(r"^  (2026-\d\d-\d\d)  \d+ transactions scored live", story, re.M)))
    assert days[0] == "2026-01-21" and days[-1] == "2026-02-01" and len(days) == 12
    # Dataset drift is flagged on every day once the amounts double; the sensor retrains on the sustained evidence,
    # not before the drift began.
    flagged = set(re.findall(r"^  (2026-\d\d-\d\d)  monitoring flags: .*dataset_drift", story, re.M))
    assert {d for d in days if d >= "2026-01-23"} <= flagged
    # Nothing is flagged before the drift begins: no warm-up alarm, no noise of a small window graded as drift.
    assert not re.search(r"^  2026-01-21  monitoring flags", story, re.M), story
    retrained = re.findall(
        r"^  (2026-\d\d-\d\d)  retraining sensor: drift: (\d) of the last 3 windows failed", story, re.M
    )
    assert retrained and min(day for day, _ in retrained) >= "2026-01-23"
    assert all(int(count) >= 2 for _, count in retrained)
    # The new fraud pattern shows in the champion's live performance once its labels arrive, never before it began.
    performance = re.findall(r"^  (2026-\d\d-\d\d)  monitoring flags: .*performance", story, re.M)
    assert performance and min(performance) > "2026-01-22"
    # Version 2 passed the offline gate, waited in shadow (no retraining meanwhile), won on labelled live traffic.
    assert re.search(r"^  2026-01-2\d  retrained \(drift\): version 2 passed the gate, now challenger", story, re.M)
    assert "version 2 in shadow" in story
    logged = scan_table(table_path(tmp_path / "data", "fraud", "prediction_log")).collect()
    assert (logged["shadow_version"] == "2").sum() > 0
    won = re.search(r"^  (2026-\d\d-\d\d)  shadow comparison won: version 2 is champion", story, re.M)
    assert won is not None, story
    assert not [day for day, _ in retrained if retrained[0][0] < day < won.group(1)]
    assert re.search(r"by version 2; 0 degraded", story)  # the live bento answered with the new champion
    assert "rollback: champion back to version 1 (from 2); the live bento now answers with version 1" in story
    aliases = open_registry(str(tmp_path / "data")).aliases("fraud")
    assert aliases["champion"] == "1"
    assert f"Live now: {', '.join(f'{a} version {v}' for a, v in sorted(aliases.items()))}." in output
