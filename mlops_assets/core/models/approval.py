"""Who may change the champion: the spec's approvers (names, and groups listed in a file), the identity of the person
acting, and separation of duties (who trained a version cannot approve it).

The identity is the environment's word (MLOPS_ACTOR, else the OS user): it keeps honest people from mistakes and
records who did what; it does not stop someone who can set variables and write to the registry.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from mlops_assets.core.models.aliases import TRAINED_BY_TAG
from mlops_assets.spec import PromotionSpec

ACTOR_ENV = "MLOPS_ACTOR"
GROUP_PREFIX = "group:"


class ApprovalError(ValueError):
    """A change of the champion the spec's approval rules refuse, or rules that cannot be applied (said why)."""


def identity(environ: Mapping[str, str] | None = None) -> str:
    """Who is acting: MLOPS_ACTOR when set, else the OS user."""
    environ = os.environ if environ is None else environ
    name = environ.get(ACTOR_ENV, "").strip()
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a bare container)
        return "unknown"


def read_groups(path: Path) -> dict[str, list[str]]:
    """The groups file: group name -> its members' names."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ApprovalError(f"promotion.groups_file: {path} not found") from None
    except yaml.YAMLError as exc:
        raise ApprovalError(f"promotion.groups_file: {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(m, list) and all(isinstance(n, str) for n in m) for m in data.values()
    ):
        raise ApprovalError(f"promotion.groups_file: {path} must map each group to a list of names")
    return {str(group): [n.strip() for n in members] for group, members in data.items()}


def approvers(promotion: PromotionSpec, groups: Mapping[str, list[str]]) -> frozenset[str] | None:
    """Every name the spec's approvers stand for (groups expanded); None: no approvers declared, anyone may."""
    if promotion.approvers is None:
        return None
    names: set[str] = set()
    for entry in promotion.approvers:
        entry = entry.strip()
        if entry.startswith(GROUP_PREFIX):
            group = entry.removeprefix(GROUP_PREFIX)
            if group not in groups:
                raise ApprovalError(
                    f"promotion.approvers: {entry!r} is not in promotion.groups_file (groups: {sorted(groups)})"
                )
            names.update(n for n in groups[group] if n)
        else:
            names.add(entry)
    if not names:
        raise ApprovalError(
            f"promotion.approvers {promotion.approvers} names nobody (its groups have no members): nobody could "
            "approve; list people, or members in promotion.groups_file"
        )
    return frozenset(names)


def approve(
    promotion: PromotionSpec,
    who: str,
    action: str,
    groups: Mapping[str, list[str]],
    trained_by: str | None = None,
    duties_apply: bool = True,
) -> str | None:
    """The approver's name when `who` may do `action` (None when the spec declares no approvers: anyone may); an
    ApprovalError saying why not otherwise. `trained_by`: the trainer of the version being promoted, checked when
    `duties_apply` (a promotion; a rollback returns to a version already approved once)."""
    allowed = approvers(promotion, groups)
    if allowed is None:
        return None
    if who not in allowed:
        raise ApprovalError(
            f"{who!r} may not {action}: promotion.approvers is {promotion.approvers} (the identity is "
            f"{ACTOR_ENV}, else the OS user)"
        )
    if promotion.separate_duties and duties_apply:
        if trained_by is None:
            raise ApprovalError(
                f"cannot {action}: the version records no {TRAINED_BY_TAG!r} (logged before trainers were recorded), "
                "so promotion.separate_duties cannot be checked; retrain it, or turn separate_duties off"
            )
        if trained_by == who:
            raise ApprovalError(
                f"{who!r} may not {action}: {who!r} trained it, and promotion.separate_duties asks another approver"
            )
    return who
