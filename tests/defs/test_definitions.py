"""The code location loads, without side effects, and its graph is what the snapshot says."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from mlops_assets.definitions import build_definitions
from tests.helpers import SMALL_SPEC

SNAPSHOT = Path(__file__).parent / "graph_snapshot.json"
ROOT = Path(__file__).parents[2]


def graph_snapshot(defs: dg.Definitions) -> dict[str, object]:
    """What a reviewer should notice changing: per asset its group, kinds, deps, partitions and checks; per job the
    assets (or ops) it runs; per schedule and sensor what it targets and whether it runs by default."""
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "partitioned": node.partitions_def is not None,
            "has_code_version": node.code_version is not None,
            "checks": sorted(c.name for c in node.check_keys),
            "blocking_checks": sorted(s.name for s in node.assets_def.check_specs if s.asset_key == key and s.blocking),
        }
    jobs: dict[str, list[str]] = {}
    for job in defs.jobs or []:
        if hasattr(job, "selection"):  # an asset job: the assets it selects
            jobs[job.name] = sorted(k.to_user_string() for k in job.selection.resolve(graph))
        else:
            jobs[job.name] = sorted(f"op {node.name}" for node in job.nodes)
    schedules = {
        s.name: {"job": s.job_name, "cron": s.cron_schedule, "status": s.default_status.value}
        for s in defs.schedules or []
    }
    sensors = {
        s.name: {
            "kind": type(s).__name__,
            "jobs": sorted(t.job_name for t in s.targets),
            "assets": sorted(k.to_user_string() for k in s.asset_selection.resolve(graph)) if s.asset_selection else [],
            "status": s.default_status.value,
        }
        for s in defs.sensors or []
    }
    return {
        "assets": assets,
        "jobs": dict(sorted(jobs.items())),
        "schedules": dict(sorted(schedules.items())),
        "sensors": dict(sorted(sensors.items())),
    }


# Every example: the built-in specs, and a pipeline without a model (the tests' CSV shop: no models stage at all).
EXAMPLES = {"built-in examples": None, "shop (no model)": "shop"}


def example_definitions(name: str | None, tmp_path: Path) -> dg.Definitions:
    if name is None:
        return build_definitions()
    (tmp_path / f"{name}.yaml").write_text(SMALL_SPEC)
    return build_definitions(tmp_path, str(tmp_path / "data"))


def test_definitions_validate() -> None:
    dg.Definitions.validate_loadable(build_definitions())


def test_graph_matches_snapshot(tmp_path: Path) -> None:
    current = {title: graph_snapshot(example_definitions(name, tmp_path)) for title, name in EXAMPLES.items()}
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(current, indent=2) + "\n")
    assert current == json.loads(SNAPSHOT.read_text()), "graph changed: review, then UPDATE_SNAPSHOTS=1 pytest"


def test_every_feature_view_reads_history_through_a_partition_mapping() -> None:
    graph = build_definitions().resolve_asset_graph()
    spend = graph.get(dg.AssetKey(["fraud", "customer_spend"]))
    (dep,) = [d for d in spend.assets_def.specs_by_key[spend.key].deps]
    assert dep.partition_mapping.start_offset == -30


def test_loading_the_code_location_has_no_side_effects(tmp_path: Path) -> None:
    """Importing definitions.py creates no folder and writes nothing (only running assets does)."""
    env = {**os.environ, "MLOPS_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "home")}
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import definitions; print(len(definitions.defs.assets))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(len(build_definitions().assets))
    assert list(tmp_path.iterdir()) == []
