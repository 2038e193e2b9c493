"""The code location loads, without side effects, and its graph is what the snapshot says."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from mlops_assets.definitions import build_definitions

SNAPSHOT = Path(__file__).parent / "graph_snapshot.json"
ROOT = Path(__file__).parents[2]


def graph_snapshot(defs: dg.Definitions) -> dict[str, object]:
    """Sorted asset keys with what a reviewer should notice changing: group, kinds, deps, partitions, checks."""
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
    jobs = sorted(j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__"))
    return {"assets": assets, "jobs": jobs}


def test_definitions_validate() -> None:
    dg.Definitions.validate_loadable(build_definitions())


def test_graph_matches_snapshot() -> None:
    current = graph_snapshot(build_definitions())
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
