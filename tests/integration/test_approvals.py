"""Who may promote, on a small copy of the fraud example: with promotion.require_approval a retrained candidate that
passes the gate waits as challenger; only an approver other than its trainer promotes it (`mlops promote`, and
`--from-shadow` is refused before it compares anything); rollback needs an approver too; the registry's tags and the
champion history say who did what and why."""

from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from mlops_assets.cli import main
from mlops_assets.core.models.registry import open_registry
from mlops_assets.definitions import build_definitions
from tests.helpers import QUIET, small_fraud_specs

pytestmark = pytest.mark.integration

GOVERNED = """  retention: 30d
  approvers: [alice, "group:fraud-leads"]
  groups_file: {groups}
  require_approval: true
  separate_duties: true"""


def _history(instance: dg.DagsterInstance) -> list[tuple[str, str, str, str, str]]:
    events = instance.fetch_materializations(dg.AssetKey(["fraud", "champion"]), limit=100).records
    fields = ("version", "previous", "reason", "triggered_by", "approved_by")
    rows = []
    for record in sorted(events, key=lambda r: r.timestamp):
        meta = record.asset_materialization.metadata
        rows.append(tuple(str(meta[f].value) if f in meta else "" for f in fields))
    return rows  # type: ignore[return-value]  # five strings each


def test_only_an_approver_who_did_not_train_a_version_makes_it_champion(
    lake: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, data = lake
    groups = tmp_path / "groups.yaml"
    groups.write_text("fraud-leads: [bob, carol]\n")
    specs = small_fraud_specs(
        tmp_path / "specs",
        **{"  retention: 30d": GOVERNED.format(groups=groups), "min_improvement: 0.005": "min_improvement: 0.0"},
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("MLOPS_ACTOR", "bob")  # trains both versions
    defs = build_definitions(specs, str(data))
    registry = open_registry(str(data))

    def mlops(actor: str, *args: str) -> tuple[int, str]:
        monkeypatch.setenv("MLOPS_ACTOR", actor)
        result = CliRunner().invoke(main, ["--specs", str(specs), "--data-dir", str(data), *args])
        return result.exit_code, result.output

    with dg.DagsterInstance.get() as instance:
        job = defs.resolve_job_def("fraud_training")
        assert job.execute_in_process(instance=instance, run_config=QUIET).success
        assert registry.aliases("fraud") == {"champion": "1"}  # a first version has no champion to keep
        # Retrained on the same data: no gain, which a margin of 0 lets through the gate; it waits for an approver.
        assert job.execute_in_process(instance=instance, run_config=QUIET).success
        assert registry.aliases("fraud") == {"champion": "1", "challenger": "2"}
        assert registry.version("fraud", "2").tags["trained_by"] == "bob"

        code, said = mlops("mallory", "promote", "fraud", "2", "--reason", "looks fine")
        assert code == 1 and "fraud: 'mallory' may not promote version 2 of 'fraud'" in said, said
        code, said = mlops("mallory", "promote", "fraud", "--from-shadow")
        assert code == 1 and "'mallory' may not promote version 2" in said, said
        assert "shadow evaluation" not in said  # refused before anything was compared
        code, said = mlops("mallory", "rollback", "fraud")
        assert code == 1 and "'mallory' may not roll back the champion of 'fraud'" in said, said
        code, said = mlops("bob", "promote", "fraud", "2", "--reason", "my own")
        assert code == 1 and "'bob' trained it, and promotion.separate_duties asks another approver" in said, said
        assert registry.aliases("fraud") == {"champion": "1", "challenger": "2"}

        code, said = mlops("alice", "promote", "fraud", "2", "--reason", "reviewed the card")
        assert code == 0 and "champion is now version 2 (was 1)" in said, said
        tags = registry.version("fraud", "2").tags
        assert (tags["promoted_by"], tags["approved_by"], tags["trained_by"]) == ("cli (alice)", "alice", "bob")
        code, said = mlops("mallory", "status")
        assert "champion   version 2" in said and "(trained by bob, approved by alice)" in said, said
        # A member of an approving group rolls back (to a version approved when it became champion).
        code, said = mlops("carol", "rollback", "fraud")
        assert code == 0 and "champion is now version 1 (was 2)" in said, said
        assert registry.version("fraud", "2").tags["rolled_back_by"] == "cli (carol)"

        assert _history(instance) == [
            ("1", "", "promotion gate passed", _history(instance)[0][3], ""),
            ("2", "1", "manual promotion: reviewed the card", "cli (alice)", "alice"),
            ("1", "2", "rollback from version 2", "cli (carol)", "carol"),
        ]
        assert _history(instance)[0][3].startswith("dagster run ")
