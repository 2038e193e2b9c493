"""Who may change the champion: approvers by name and group, the identity acting, separation of duties."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mlops_assets.core.models.approval import ApprovalError, approve, approvers, identity, read_groups
from mlops_assets.spec import PromotionSpec

GROUPS = {"fraud-leads": ["bob", "carol"], "empty": []}


def _promotion(**fields: Any) -> PromotionSpec:
    return PromotionSpec(minimum=0.1, **fields)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"approvers": []}, "an empty list names nobody"),
        ({"approvers": ["  "]}, "names nobody: give a name or group:<name>"),
        ({"approvers": ["group:"]}, "names nobody: give a name or group:<name>"),
        ({"approvers": ["group:leads"]}, "approvers names a group: declare groups_file"),
        ({"require_approval": True}, "require_approval: needs approvers"),
        ({"separate_duties": True}, "separate_duties: needs approvers"),
    ],
)
def test_approver_lists_that_name_nobody_are_refused_with_the_spec(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        _promotion(**fields)


def test_a_group_without_members_or_unknown_names_nobody() -> None:
    promotion = _promotion(approvers=["group:empty"], groups_file="groups.yaml")
    with pytest.raises(ApprovalError, match=r"names nobody \(its groups have no members\)"):
        approvers(promotion, GROUPS)
    with pytest.raises(ApprovalError, match=r"'group:ops' is not in promotion.groups_file \(groups: \['empty'"):
        approvers(_promotion(approvers=["group:ops"], groups_file="groups.yaml"), GROUPS)
    both = _promotion(approvers=["alice", "group:fraud-leads"], groups_file="groups.yaml")
    assert approvers(both, GROUPS) == {"alice", "bob", "carol"}


def test_without_approvers_anyone_may_and_none_is_recorded_as_approver() -> None:
    assert approve(_promotion(), "mallory", "promote version 2", {}) is None


def test_a_non_approver_is_refused_and_an_approver_is_recorded() -> None:
    promotion = _promotion(approvers=["alice", "group:fraud-leads"], groups_file="groups.yaml")
    with pytest.raises(ApprovalError, match=r"'mallory' may not promote version 2: promotion.approvers is"):
        approve(promotion, "mallory", "promote version 2", GROUPS)
    assert approve(promotion, "carol", "promote version 2", GROUPS) == "carol"


def test_separate_duties_refuses_the_trainer_of_the_version_but_not_a_rollback() -> None:
    promotion = _promotion(approvers=["alice", "bob"], separate_duties=True)
    with pytest.raises(ApprovalError, match=r"trained it, and promotion\.separate_duties asks another approver"):
        approve(promotion, "alice", "promote version 2", {}, trained_by="alice")
    assert approve(promotion, "bob", "promote version 2", {}, trained_by="alice") == "bob"
    with pytest.raises(ApprovalError, match="records no 'trained_by'"):
        approve(promotion, "bob", "promote version 2", {}, trained_by=None)
    # A rollback returns to a version approved when it became champion: its trainer may roll back to it.
    assert approve(promotion, "alice", "roll back", {}, trained_by=None, duties_apply=False) == "alice"


def test_the_identity_is_mlops_actor_else_the_os_user(monkeypatch: pytest.MonkeyPatch) -> None:
    assert identity({"MLOPS_ACTOR": " alice "}) == "alice"
    monkeypatch.setattr("getpass.getuser", lambda: "os-user")
    assert identity({"MLOPS_ACTOR": ""}) == identity({}) == "os-user"


def test_the_groups_file_is_read_and_its_mistakes_are_named(tmp_path: Path) -> None:
    path = tmp_path / "groups.yaml"
    path.write_text("fraud-leads: [bob, carol]\n")
    assert read_groups(path) == {"fraud-leads": ["bob", "carol"]}
    path.write_text("fraud-leads: bob\n")
    with pytest.raises(ApprovalError, match="must map each group to a list of names"):
        read_groups(path)
    with pytest.raises(ApprovalError, match=r"promotion.groups_file: .*missing.yaml not found"):
        read_groups(tmp_path / "missing.yaml")
