"""Code location entry point of this checkout (`dagster dev` reads it through workspace.yaml): the same definitions
as `mlops_assets.code_location`, whose docstring lists the environment variables that configure them."""

from mlops_assets.code_location import defs

__all__ = ["defs"]
