"""Resources shared by every pipeline's assets."""

from pathlib import Path

import dagster as dg
from pydantic import Field


class LakeResource(dg.ConfigurableResource):
    """The embedded offline store: landing files and Delta tables under one data folder."""

    data_dir: str = Field(default="data", description="data folder; relative paths resolve against the cwd")

    @property
    def root(self) -> Path:
        return Path(self.data_dir).resolve()
