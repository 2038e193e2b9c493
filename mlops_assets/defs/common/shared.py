"""Shared sources and feature views (an included file with a `namespace`): one asset each, read by several pipelines.
A change of what one follows (its definition hash) is refused until it is accepted on purpose, never applied to the
days of one pipeline's run and not to the others'."""

from collections.abc import Sequence

import dagster as dg

from mlops_assets.defs.keys import ACCEPT_DEFINITION_TAG

DEFINITION_HASH = "definition_hash"  # metadata of each shared asset's materializations


def guard_definition(
    context: dg.AssetExecutionContext, key: dg.AssetKey, definition_hash: str, users: Sequence[str]
) -> dict[str, str]:
    """Fail when the table was written under another definition (unless the run accepts the change); otherwise the
    metadata that records this one."""
    event = context.instance.get_latest_materialization_event(key)
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    recorded = getattr(metadata.get(DEFINITION_HASH), "value", None)
    accepted = context.run.tags.get(ACCEPT_DEFINITION_TAG) == "true"
    if recorded is not None and recorded != definition_hash and not accepted:
        raise dg.Failure(
            description=f"{key.to_user_string()}: its shared definition changed since its table was written "
            f"(hash {recorded} -> {definition_hash}), and pipelines {', '.join(users)} read it: their training sets "
            "and models were built on the old one. To apply the change to all of them, rebuild its history on "
            f"purpose (`mlops materialize PIPELINE --start DAY --days N --accept-definition-change`, or the run tag "
            f"{ACCEPT_DEFINITION_TAG}=true), then retrain each; or put the file back as it was.",
            allow_retries=False,
        )
    return {DEFINITION_HASH: definition_hash, "shared_by": ", ".join(users)}
