"""One decision of the retraining policy, taken and carried out now: what the retraining sensor does on a tick,
for a caller with a clock of its own (the demo counts cooldowns in the days of its story, not the wall clock's)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from mlops_assets.app.workspace import Workspace
from mlops_assets.core.models.aliases import CHALLENGER, CHAMPION
from mlops_assets.defs import keys
from mlops_assets.defs.models.assets import PROMOTION_GATE
from mlops_assets.defs.monitoring.sensors import evaluate_policy, pending_challenger, retraining_request
from mlops_assets.spec import PipelineSpec


class Retrained(StrEnum):
    CHAMPION = "champion"  # the retrained model passed the gate and replaced the champion
    CHALLENGER = "challenger"  # it passed the gate and waits as challenger (promotion: manual, or require_approval)
    REFUSED = "refused"  # it did not pass the gate
    FAILED = "failed"  # the run failed before the gate


@dataclass(frozen=True)
class Tick:
    explanation: str  # the policy's reasoning, whether it retrained or not
    cursor: str  # the evidence acted on so far: pass it to the next tick
    reason: str | None = None  # drift or performance, when it retrained
    retrained: Retrained | None = None
    version: str | None = None  # the retrained version, when it became champion or challenger
    gate: str | None = None  # the promotion gate's reasons


def retraining_tick(workspace: Workspace, spec: PipelineSpec, cursor: str | None, now: datetime) -> Tick:
    """The retraining sensor's decision at `now`, and the retraining run it asks for, run here."""
    registry = workspace.registry
    challenger = pending_challenger(workspace.instance, registry, spec.name)
    decision, cursor = evaluate_policy(workspace.instance, spec, cursor, now, challenger)
    if not decision.retrain:
        return Tick(decision.explanation, cursor)
    request = retraining_request(spec, decision, now)
    before = registry.aliases(spec.name)
    result = workspace.run(keys.retraining_job(spec), tags=request.tags)
    after = registry.aliases(spec.name)
    gates = [e for e in result.get_asset_check_evaluations() if e.check_name == PROMOTION_GATE]
    gate = gates[0].description if gates else None
    done = Tick(decision.explanation, cursor, decision.reason, gate=gate)
    if after.get(CHAMPION) != before.get(CHAMPION):
        return replace(done, retrained=Retrained.CHAMPION, version=after[CHAMPION])
    if after.get(CHALLENGER) and after.get(CHALLENGER) != before.get(CHALLENGER):
        return replace(done, retrained=Retrained.CHALLENGER, version=after[CHALLENGER])
    return replace(done, retrained=Retrained.REFUSED if gates else Retrained.FAILED)
