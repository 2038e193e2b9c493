"""What reproducing a registered version found: whether the rebuilt training set and the retrained model are the
ones registered, and, where they are not, the largest difference and what changed since (packages, code, spec)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from mlops_assets.core.models.modeling import Outputs


@dataclass(frozen=True)
class Reproduction:
    pipeline: str
    version: str
    training_rows: int
    training_set_equal: bool  # the rebuilt training set's content hash is the one the version recorded
    holdout_rows: int
    largest_difference: float  # between the registered and the retrained model's outputs on the frozen holdout
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)  # what -> (recorded, now)

    @property
    def identical(self) -> bool:
        return self.training_set_equal and self.largest_difference == 0.0


def largest_difference(registered: Outputs, retrained: Outputs) -> float:
    """The largest absolute difference between two models' outputs on the same rows: inf when they answer in other
    shapes or classes, or only one of them answers NaN."""
    if registered.values.shape != retrained.values.shape or registered.classes != retrained.classes:
        return float("inf")
    a, b = registered.values.astype(float), retrained.values.astype(float)
    if (np.isnan(a) != np.isnan(b)).any():
        return float("inf")
    both = np.isnan(a) & np.isnan(b)
    return float(np.max(np.where(both, 0.0, np.abs(a - b)), initial=0.0))


def changes(recorded: Mapping[str, str], now: Mapping[str, str], prefix: str = "") -> dict[str, tuple[str, str]]:
    """Entries whose value is not what was recorded (missing on either side: 'not recorded' / 'absent')."""
    return {
        f"{prefix}{name}": (recorded.get(name, "not recorded"), now.get(name, "absent"))
        for name in sorted(set(recorded) | set(now))
        if recorded.get(name) != now.get(name)
    }
