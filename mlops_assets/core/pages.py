"""Where the pages people read are kept (drift reports, model cards) and how a browser opens them: files in the data
folder (file URLs), or objects under an s3:// location (MLOPS_REPORTS_URI) opened by presigned links.

The same relative key (`settings.drift_report_page`, `settings.card_page`) names a page in either place.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mlops_assets.core.object_store import exists, list_uris, presigned_link, put_file


@dataclass(frozen=True)
class Page:
    """Where a page is (a file path or an s3:// URI) and what a browser opens: its file URL, a presigned link valid
    until `expires`, or none, with the reason."""

    location: str
    url: str | None
    expires: datetime | None = None
    no_link: str | None = None

    @property
    def remote(self) -> bool:
        return self.location.startswith("s3://")


@dataclass(frozen=True)
class Pages:
    """The data folder's pages (`uri` None) or those under an object-store location; links last `link_seconds`."""

    root: Path
    uri: str | None
    link_seconds: int

    def page(self, key: str) -> Page:
        """The page at `key` (written or not: a link is made without reading it)."""
        if self.uri is None:
            path = self.root / key
            return Page(str(path), path.as_uri())
        link = presigned_link(f"{self.uri}/{key}", self.link_seconds)
        return Page(link.uri, link.url, link.expires, link.no_link)

    @contextmanager
    def writing(self, *keys: str) -> Iterator[list[Path]]:
        """Local files to write the pages at `keys` into: the data folder's own, or a scratch folder's, uploaded
        when the block ends without an error (a page is never half there)."""
        if self.uri is None:
            files = [self.root / key for key in keys]
            for file in files:
                file.parent.mkdir(parents=True, exist_ok=True)
            yield files
            return
        scratch = Path(tempfile.mkdtemp(prefix="pages-"))
        try:
            files = [scratch / key for key in keys]
            for file in files:
                file.parent.mkdir(parents=True, exist_ok=True)
            yield files
            for key, file in zip(keys, files, strict=True):
                if file.exists():
                    put_file(f"{self.uri}/{key}", file)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def exists(self, key: str) -> bool:
        if self.uri is None:
            return (self.root / key).exists()
        return exists(f"{self.uri}/{key}")

    def keys(self, folder: str, suffix: str) -> list[str]:
        """The keys of the pages in `folder` (e.g. reports/fraud/drift) ending with `suffix`, sorted."""
        if self.uri is None:
            return sorted(str(p.relative_to(self.root)) for p in (self.root / folder).glob(f"*{suffix}"))
        prefix = f"{self.uri}/{folder.rstrip('/')}/"
        return [u.removeprefix(f"{self.uri}/") for u in list_uris(prefix) if u.endswith(suffix)]
