"""The registry's aliases of a pipeline's model: the version answering and the one waiting beside it (no MLflow
import here: the CLI names them without loading MLflow)."""

CHAMPION, CHALLENGER = "champion", "challenger"
# On a version that became champion: the version it replaced (what a rollback restores).
PREVIOUS_CHAMPION_TAG = "previous_champion"
