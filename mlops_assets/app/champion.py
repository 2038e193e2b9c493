"""Which model is live, changed on purpose: promote a version, promote the challenger if it won in shadow, roll
back. Every change goes through the registry, is recorded as a champion materialization (the history the UI shows)
and rebuilds the bento; decisions come back as values, never as prose to parse."""

from __future__ import annotations

from dataclasses import dataclass

from mlops_assets.app.runs import RunSummary, build_bento, check_verdict
from mlops_assets.app.workspace import AppError, Workspace
from mlops_assets.core.models import approval
from mlops_assets.core.models.aliases import CHALLENGER, TRAINED_BY_TAG
from mlops_assets.core.models.registry import ChampionEvent, RegistryError
from mlops_assets.core.serving.experiments import running
from mlops_assets.core.serving.shadow import ShadowOutcome
from mlops_assets.defs import keys
from mlops_assets.defs.models.assets import record_champion_change
from mlops_assets.settings import experiments_folder
from mlops_assets.spec import PipelineSpec


def actor(via: str) -> str:
    """Who made a change, as the champion history records it: the tool and the identity running it (MLOPS_ACTOR,
    else the OS user)."""
    return f"{via} ({approval.identity()})"


def authorize(workspace: Workspace, spec: PipelineSpec, action: str, version: str | None = None) -> str | None:
    """The approver of a change of the champion, by the spec's promotion.approvers: None when it declares none
    (anyone may); an AppError saying why when the person acting may not. `version`: the version being promoted,
    whose trainer may not approve it under promotion.separate_duties; None for a rollback (to a version that was
    approved when it became champion). Every path that changes the champion calls it first."""
    promotion = spec.promotion
    assert promotion is not None, "a pipeline with a model has a promotion gate"
    try:
        groups = approval.read_groups(workspace.root / promotion.groups_file) if promotion.groups_file else {}
        trained_by = None
        if version is not None and promotion.separate_duties:
            trained_by = workspace.registry.version(spec.name, version).tags.get(TRAINED_BY_TAG)
        return approval.approve(
            promotion, approval.identity(), action, groups, trained_by, duties_apply=version is not None
        )
    except (approval.ApprovalError, RegistryError) as exc:
        raise AppError(f"{spec.name}: {exc}") from None


@dataclass(frozen=True)
class ChampionChange:
    event: ChampionEvent
    bento: RunSummary  # the rebuild of the bento that serves the new live models

    @property
    def bento_failed(self) -> bool:
        return not self.bento.ok


def _record(workspace: Workspace, spec: PipelineSpec, event: ChampionEvent) -> ChampionChange:
    record_champion_change(workspace.instance, workspace.registry, spec, workspace.pages, event)
    return ChampionChange(event, RunSummary.of(build_bento(workspace, spec)))


def refuse_during_experiment(workspace: Workspace, spec: PipelineSpec, change: str) -> None:
    """A change of the live versions while an A/B experiment runs would change one of its variants mid-test."""
    experiment = running(experiments_folder(workspace.root, spec.name))
    if experiment is not None:
        raise AppError(
            f"{spec.name!r}: {experiment.describe()} is running, and {change} would change its variants mid-test. "
            f"End it first: `mlops promote {spec.name} --from-ab` once it has decided, or `mlops ab stop "
            f"{spec.name} --reason TEXT`"
        )


def promote(workspace: Workspace, spec: PipelineSpec, version: str, reason: str, by: str) -> ChampionChange:
    """Make `version` the champion, for `reason` (recorded with who did it, and who approved it where the spec
    names approvers); refused while an A/B experiment runs."""
    refuse_during_experiment(workspace, spec, f"promoting version {version}")
    approved_by = authorize(workspace, spec, f"promote version {version} of {spec.name!r}", version)
    return promote_authorized(workspace, spec, version, reason, by, approved_by)


def promote_authorized(
    workspace: Workspace, spec: PipelineSpec, version: str, reason: str, by: str, approved_by: str | None
) -> ChampionChange:
    """The registry's promotion, once `authorize` has said who approved it (the A/B decision ends its experiment
    only after this has landed)."""
    try:
        event = workspace.registry.promote(spec.name, version, reason, by, approved_by)
    except RegistryError as exc:
        raise AppError(str(exc)) from None
    return _record(workspace, spec, event)


def rollback(workspace: Workspace, spec: PipelineSpec, by: str) -> ChampionChange:
    """The champion back to the version it replaced; refused while an A/B experiment runs."""
    refuse_during_experiment(workspace, spec, "a rollback")
    approved_by = authorize(workspace, spec, f"roll back the champion of {spec.name!r}")
    try:
        event = workspace.registry.rollback(spec.name, by, approved_by)
    except RegistryError as exc:
        raise AppError(str(exc)) from None
    return _record(workspace, spec, event)


@dataclass(frozen=True)
class ShadowVerdict:
    outcome: ShadowOutcome
    challenger: str
    reasons: str  # the gate's reasons, or why no comparison could be made
    labelled_rows: int


def shadow_verdict(workspace: Workspace, spec: PipelineSpec) -> ShadowVerdict:
    """Compare the challenger with the champion on labelled live traffic (the shadow evaluation asset and its gate)."""
    if "challenger" not in workspace.registry.aliases(spec.name):
        raise AppError(f"{spec.name!r} has no challenger to compare with its champion")
    meta, description = check_verdict(workspace, keys.shadow_job(spec), f"the shadow evaluation of {spec.name!r}")
    return ShadowVerdict(
        ShadowOutcome(meta["outcome"]), str(meta["challenger_version"]), description, int(meta["labelled_rows"])
    )


def promote_if_won(workspace: Workspace, spec: PipelineSpec, by: str) -> tuple[ShadowVerdict, ChampionChange | None]:
    """The one decision "promote the challenger if it won in shadow": the verdict, and the change when it won."""
    refuse_during_experiment(workspace, spec, "promoting from the shadow comparison")  # before the comparison runs
    challenger = workspace.registry.aliases(spec.name).get(CHALLENGER)
    if challenger is not None:  # refused before the comparison is run, not after
        authorize(workspace, spec, f"promote version {challenger} of {spec.name!r}", challenger)
    verdict = shadow_verdict(workspace, spec)
    if verdict.outcome is not ShadowOutcome.WON:
        return verdict, None
    reason = f"won on labelled live traffic: {verdict.reasons}"
    return verdict, promote(workspace, spec, verdict.challenger, reason, by)
