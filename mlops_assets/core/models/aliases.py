"""The registry's aliases of a pipeline's model: the version answering and the one waiting beside it (no MLflow
import here: the CLI names them without loading MLflow)."""

CHAMPION, CHALLENGER = "champion", "challenger"
# On a version that became champion: the version it replaced (what a rollback restores).
PREVIOUS_CHAMPION_TAG = "previous_champion"
# Who trained a version, who promoted or approved it, who rolled it back (core/models/approval.py).
TRAINED_BY_TAG, PROMOTED_BY_TAG, APPROVED_BY_TAG, ROLLED_BACK_BY_TAG = (
    "trained_by",
    "promoted_by",
    "approved_by",
    "rolled_back_by",
)
