"""A/B experiments, as a person runs them: start one between the champion and the challenger, read its decision,
promote the challenger only when it won, or stop it. Decisions come back as values."""

from __future__ import annotations

from dataclasses import dataclass

from mlops_assets.app.champion import ChampionChange, authorize, promote_authorized
from mlops_assets.app.runs import check_verdict
from mlops_assets.app.workspace import AppError, Workspace
from mlops_assets.core.models.aliases import CHALLENGER, CHAMPION
from mlops_assets.core.monitoring.ab import ABDecision
from mlops_assets.core.serving import experiments
from mlops_assets.core.serving.experiments import Experiment, ExperimentError
from mlops_assets.defs import keys
from mlops_assets.settings import experiments_folder
from mlops_assets.spec import PipelineSpec


def _ab_settings(spec: PipelineSpec) -> str:
    if spec.serving.rollout != "ab" or spec.serving.ab_test is None:
        raise AppError(
            f"{spec.name!r} serves with rollout {spec.serving.rollout!r}: an A/B experiment needs serving.rollout: ab "
            "and serving.ab_test in its spec"
        )
    return spec.serving.ab_test.fingerprint()


def start(workspace: Workspace, spec: PipelineSpec, by: str) -> Experiment:
    """Start the A/B experiment of the current champion against the current challenger; refused while one runs."""
    settings = _ab_settings(spec)
    aliases = workspace.registry.aliases(spec.name)
    if CHAMPION not in aliases or CHALLENGER not in aliases:
        raise AppError(f"{spec.name!r} has no champion and challenger to test against each other: {aliases}")
    try:
        return experiments.start(
            experiments_folder(workspace.root, spec.name),
            spec.name,
            aliases[CHAMPION],
            aliases[CHALLENGER],
            settings,
            by,
        )
    except ExperimentError as exc:
        raise AppError(str(exc)) from None


def stop(workspace: Workspace, spec: PipelineSpec, reason: str, by: str) -> Experiment:
    """End the running experiment without a decision (its rows stay in the log; the record keeps the reason)."""
    folder = experiments_folder(workspace.root, spec.name)
    experiment = experiments.running(folder)
    if experiment is None:
        raise AppError(f"no A/B experiment is running for {spec.name!r}")
    try:
        return experiments.end(folder, experiment, f"stopped: {reason}", by)
    except ExperimentError as exc:  # ended meanwhile by another command
        raise AppError(str(exc)) from None


@dataclass(frozen=True)
class ABVerdict:
    decision: ABDecision
    experiment: str
    champion: str
    challenger: str
    reason: str
    labelled_rows: int


def verdict(workspace: Workspace, spec: PipelineSpec) -> ABVerdict:
    """Analyse the running experiment (the ab_test asset and its check)."""
    _ab_settings(spec)
    if experiments.running(experiments_folder(workspace.root, spec.name)) is None:
        raise AppError(f"no A/B experiment is running for {spec.name!r}: start one with `mlops ab start {spec.name}`")
    meta, description = check_verdict(workspace, keys.ab_job(spec), f"the A/B test of {spec.name!r}")
    return ABVerdict(
        ABDecision(meta["decision"]),
        str(meta["experiment"]),
        str(meta["champion_version"]),
        str(meta["challenger_version"]),
        description,
        int(meta["labelled_rows"]),
    )


def promote_if_won(workspace: Workspace, spec: PipelineSpec, by: str) -> tuple[ABVerdict, ChampionChange | None]:
    """The one decision "promote the challenger if it won the A/B test". A decided test ends its experiment (the
    champion stays when the challenger did not win); one still collecting goes on."""
    decided = verdict(workspace, spec)
    if decided.decision is ABDecision.KEEP_COLLECTING:
        return decided, None
    folder = experiments_folder(workspace.root, spec.name)
    experiment = experiments.running(folder)
    if experiment is None or experiment.id != decided.experiment:
        raise AppError(f"A/B experiment {decided.experiment} of {spec.name!r} was ended while it was analysed")
    change = None
    if decided.decision is ABDecision.CHALLENGER_WINS:
        # Who may promote is asked once, and the promotion lands before the experiment ends: a refused or failed
        # promotion leaves the experiment running, to be decided again.
        action = f"promote version {decided.challenger} of {spec.name!r}"
        approved_by = authorize(workspace, spec, action, decided.challenger)
        reason = f"won A/B experiment {decided.experiment}: {decided.reason}"
        change = promote_authorized(workspace, spec, decided.challenger, reason, by, approved_by)
    try:
        experiments.end(folder, experiment, decided.decision.value, by)
    except ExperimentError as exc:
        raise AppError(str(exc)) from None
    return decided, change
