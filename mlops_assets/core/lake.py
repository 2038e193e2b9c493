"""The offline store: Delta tables under the data folder, or under an object store's prefix (s3://bucket/prefix),
written atomically, replaced a partition at a time."""

from __future__ import annotations

import glob
import hashlib
import io
import itertools
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import deltalake
import polars as pl
import pyarrow as pa
from upath import UPath

PARTITION_COLUMN = "partition_date"
# A replace that loses a race with another writer of the same partitions is re-committed: it replaces them whole.
COMMIT_ATTEMPTS = 8
_HASH_SEEDS = (0x6D6C6F70, 0x73617373)
# A streamed write keeps the file it is writing in memory until it reaches this size, and a row group until it has this
# many rows: both bound its memory, whatever the stream's length (bench/bench_scores.py).
STREAM_FILE_BYTES = 32 * 2**20
STREAM_ROW_GROUP_ROWS = 128 * 1024
_MASK = 0xFFFFFFFFFFFFFFFF
# Each commit carries a token of its own in its commit info: the version it landed as is found by it, not read as the
# table's latest (which a concurrent writer may have moved on by then).
COMMIT_TOKEN = "mlops.commit"


# Where the lake's tables and files are: a local folder (a Path), or a prefix in object storage (a UPath over fsspec,
# `s3://bucket/prefix/...`), reached with the standard AWS_* variables of the environment (delta-rs, polars and s3fs
# read the same ones). A local PosixUPath is a Path too: only an object store's location is not.
Location = Path | UPath


class TableNotFoundError(FileNotFoundError):
    """A table that a step reads has never been written (its asset was not materialized)."""


def location(where: str | Path) -> Location:
    """`s3://bucket/prefix` as a location in object storage (S3 or a server speaking its API); anything else as a
    local folder, resolved against the working directory."""
    if isinstance(where, str) and "://" in where:
        scheme, _, rest = where.partition("://")
        if scheme != "s3":
            raise ValueError(f"{where}: the lake is a local folder or s3://bucket/prefix, not {scheme}://")
        if not rest.partition("/")[0] or "?" in rest or "@" in rest.partition("/")[0]:
            # Options and credentials are AWS's environment variables, never part of the location.
            raise ValueError(f"{where}: the lake is s3://bucket/prefix, without a query or credentials")
        # Listings are never cached: another process (a worker on another host) may have written since.
        return UPath(where.rstrip("/"), use_listings_cache=False)
    return Path(where).resolve()


def unreachable(root: Location) -> str | None:
    """Why the lake at `root` in object storage cannot be used (no endpoint answering, a missing or refused bucket),
    in one sentence naming it; None when it can be, or is a local folder. Credentials are never part of the sentence.
    """
    if isinstance(root, Path):
        return None
    import boto3  # only for a lake in object storage: boto3 takes a while to import
    import botocore.config
    import botocore.exceptions

    bucket = str(root).partition("://")[2].partition("/")[0]
    # A few seconds and one retry: a lake that does not answer is said at once, not after minutes of backoff.
    config = botocore.config.Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2})
    client = boto3.client("s3", config=config)
    try:
        client.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket"):
            return f"the lake {root}: bucket {bucket!r} does not exist at {client.meta.endpoint_url}"
        if code in ("403", "AccessDenied"):
            return (
                f"the lake {root}: access to bucket {bucket!r} is denied at {client.meta.endpoint_url} "
                "(check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            )
        return f"the lake {root}: bucket {bucket!r} answered {code} at {client.meta.endpoint_url}"
    except botocore.exceptions.NoCredentialsError:
        return f"the lake {root}: no AWS credentials in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
    except botocore.exceptions.BotoCoreError as exc:
        # Endpoint and connection errors: their message names the URL tried, never a credential.
        return f"the lake {root} cannot be reached: {exc}"
    return None


def is_remote(where: Location) -> bool:
    return not isinstance(where, Path)


def io_path(where: Location) -> Path | str:
    """What polars and delta-rs open: a local path as it is, an object by its URI."""
    return where if isinstance(where, Path) else str(where)


def matching(pattern: Location) -> list[Location]:
    """The files a glob pattern matches (a plain path: itself, if it exists), sorted by name."""
    if isinstance(pattern, Path):
        return sorted(Path(p) for p in glob.glob(str(pattern)))
    # The location's fsspec file system lists the objects ("bucket/key" each).
    keys = (
        pattern.fs.glob(pattern.path) if glob.has_magic(pattern.path) else ([pattern.path] if pattern.exists() else [])
    )
    return [pattern.with_segments(f"{pattern.protocol}://{key}") for key in sorted(keys)]


def write_whole(frame: pl.DataFrame, target: Location) -> None:
    """`frame` as the Parquet file `target`, whole or not at all: in a folder written aside, then renamed; in object
    storage, one PUT of the whole object."""
    if isinstance(target, Path):
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp")
        frame.write_parquet(temporary)
        temporary.replace(target)
        return
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    target.write_bytes(buffer.getvalue())


def table_path(root: Location, pipeline: str, table: str) -> Location:
    """Where a pipeline's table lives: one name for the asset, the table and the folder."""
    return root / "lake" / pipeline / table


def table_version(path: Location) -> int | None:
    try:
        return deltalake.DeltaTable(str(path)).version()
    except deltalake.exceptions.TableNotFoundError:
        return None


def replace_partitions(path: Location, frame: pl.DataFrame, days: Sequence[str]) -> int:
    """Replace exactly the given daily partitions with `frame`, in one Delta commit; returns the new version.

    Re-running the same days gives the same table: rows of those days are removed and written in the same
    commit, so readers see the old partitions or the new ones, never a mix or a duplicate. Writers of other
    partitions commit side by side; a concurrent writer of the same partitions makes Delta refuse one commit, which
    is then retried (with jitter): the last commit wins whole.
    """
    outside = frame.filter(~pl.col(PARTITION_COLUMN).is_in(list(days))).height
    if outside:
        raise ValueError(f"{outside} rows of {path.name} fall outside the partitions being replaced")
    quoted = ", ".join(f"'{d}'" for d in days)
    data = frame.to_arrow()
    return _committed(
        path,
        lambda properties: deltalake.write_deltalake(
            str(path),
            data,
            mode="overwrite",
            predicate=f"{PARTITION_COLUMN} IN ({quoted})",
            partition_by=[PARTITION_COLUMN],
            # Additive evolution only (a new column, e.g. in the prediction log): older partitions read it as null.
            schema_mode="merge",
            commit_properties=properties,
        ),
    )


def _committed(
    path: Location, commit: Callable[[deltalake.CommitProperties], None], attempts: int = COMMIT_ATTEMPTS
) -> int:
    """Run a Delta commit, again (with jitter, up to `attempts` times) when a concurrent writer of the same partitions
    made Delta refuse it; returns the version it landed as, found by its token (a commit refused after it landed,
    then retried, lands twice with the same rows: the later one is returned)."""
    token = uuid.uuid4().hex
    properties = deltalake.CommitProperties(custom_metadata={COMMIT_TOKEN: token})
    for attempt in range(1, attempts + 1):
        try:
            commit(properties)
            break
        except deltalake.exceptions.CommitFailedError:
            if attempt == attempts:
                raise
            time.sleep(random.uniform(0.01, 0.05) * attempt)
    # Newest first. delta-rs's history() numbers the commits it lists by counting down from a latest version read
    # apart from them, so a writer committing meanwhile shifts its numbers: each commit file is read by its name.
    latest = deltalake.DeltaTable(str(path)).version()
    for version in range(latest, -1, -1):
        try:
            if token in (path / "_delta_log" / f"{version:020d}.json").read_text():
                return version
        except FileNotFoundError:  # older commits cleaned up behind a checkpoint (the prediction log's purge)
            break
    raise RuntimeError(f"the commit to {path} landed but is not in its log")


def overwrite_table(path: Location, frames: pl.DataFrame | Iterable[pl.DataFrame]) -> int:
    """Replace a whole (unpartitioned) table in one commit, schema included; returns the new version.

    Given an iterable of frames of one schema, each is written as it comes, so only one is in memory; if the
    iterable fails (or the process dies) before its end, nothing is committed and the old table stays.
    """
    stream = iter([frames] if isinstance(frames, pl.DataFrame) else frames)
    first = next(stream).to_arrow()
    failed: list[Exception] = []

    def rest() -> Iterator[pa.RecordBatch]:
        try:
            for frame in stream:
                yield from frame.to_arrow().cast(first.schema).to_batches()
        except Exception as exc:
            failed.append(exc)
            raise

    data = pa.RecordBatchReader.from_batches(first.schema, itertools.chain(first.to_batches(), rest()))

    def commit(properties: deltalake.CommitProperties) -> None:
        try:
            deltalake.write_deltalake(
                str(path), data, mode="overwrite", schema_mode="overwrite", commit_properties=properties
            )
        except deltalake.exceptions.DeltaError:
            if failed:  # the stream's own error, not delta-rs's wrapping of it
                raise failed[0] from None
            raise

    return _committed(path, commit, attempts=1)  # the stream is consumed: a refused commit is not retried


def table_facts(path: Location) -> tuple[int, int, str | None]:
    """(rows, daily partitions, the last partition day) of a table, from its Delta log alone (no data file read);
    (0, 0, None) before it exists."""
    if table_version(path) is None:
        return 0, 0, None
    actions = pl.DataFrame(deltalake.DeltaTable(str(path)).get_add_actions(flatten=True))
    day = f"partition.{PARTITION_COLUMN}"
    if actions.is_empty():
        return 0, 0, None
    rows = int(actions["num_records"].sum())
    if day not in actions.columns:
        return rows, 0, None
    return rows, actions[day].n_unique(), str(actions[day].max())


def scan_table(path: Location, days: Sequence[str] | None = None) -> pl.LazyFrame:
    """Lazily read a table, pruned to the given daily partitions when they are named."""
    if table_version(path) is None:
        raise TableNotFoundError(f"Delta table {path} does not exist yet: materialize its asset first")
    frame = pl.scan_delta(str(path))
    if days is not None:
        frame = frame.filter(pl.col(PARTITION_COLUMN).is_in(list(days)))
    return frame


class TableDigest:
    """The rows, schema and order-independent content hash of a table, fed a frame at a time."""

    def __init__(self) -> None:
        self.rows = 0
        self.schema = pl.Schema()
        self._sums = [0 for _ in _HASH_SEEDS]

    @classmethod
    def of(cls, frame: pl.DataFrame) -> TableDigest:
        digest = cls()
        digest.add(frame)
        return digest

    def add(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Count `frame` in, and return it (so a stream of frames can be digested on its way to the table)."""
        self.rows += frame.height
        self.schema = self.schema or frame.schema
        # Row hashes are summed modulo 2**64, so any split of the rows into frames gives the same sums.
        sums = zip(self._sums, _HASH_SEEDS, strict=True)
        self._sums = [(total + int(frame.hash_rows(seed=seed).sum())) & _MASK for total, seed in sums]
        return frame

    def hexdigest(self) -> str:
        if not self.schema:
            return "0" * 64
        parts = [*self._sums, self.rows, hash_text(",".join(f"{n}:{t}" for n, t in self.schema.items()))]
        return "".join(f"{p & _MASK:016x}" for p in parts)


def content_hash(frame: pl.DataFrame) -> str:
    """An order-independent hash of a frame's rows and column names (stable for one polars version)."""
    return TableDigest.of(frame).hexdigest()


def hash_text(text: str) -> int:
    """A stable 64-bit hash of a string (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def replace_partitions_streamed(
    path: Location, frames: Callable[[], Iterable[pl.DataFrame]], days: Sequence[str], schema: pa.Schema
) -> int:
    """`replace_partitions` for a stream of frames of one `schema`, written as they come (a few in memory at a time),
    in one commit; returns the new version. `frames` makes the stream, again when a concurrent writer of the same
    partitions makes Delta refuse the commit. If the stream fails before its end, nothing is committed."""
    quoted = ", ".join(f"'{d}'" for d in days)

    def checked() -> Iterator[pa.RecordBatch]:
        for frame in frames():
            outside = frame.filter(~pl.col(PARTITION_COLUMN).is_in(list(days))).height
            if outside:
                raise ValueError(f"{outside} rows of {path.name} fall outside the partitions being replaced")
            yield from frame.to_arrow().select(schema.names).cast(schema).to_batches()

    def commit(properties: deltalake.CommitProperties) -> None:
        stream = _Produced(checked())
        try:
            deltalake.write_deltalake(
                str(path),
                pa.RecordBatchReader.from_batches(schema, stream),
                target_file_size=STREAM_FILE_BYTES,
                writer_properties=deltalake.WriterProperties(max_row_group_size=STREAM_ROW_GROUP_ROWS),
                mode="overwrite",
                predicate=f"{PARTITION_COLUMN} IN ({quoted})",
                partition_by=[PARTITION_COLUMN],
                schema_mode="merge",
                commit_properties=properties,
            )
        except deltalake.exceptions.CommitFailedError:
            raise
        except Exception:
            if stream.failed is not None:  # the stream's own error, not delta-rs's (or arrow's) wrapping of it
                raise stream.failed from None
            raise
        finally:
            stream.close()

    return _committed(path, commit)


class _Produced(Iterator[pa.RecordBatch]):
    """A stream of batches computed in a thread of its own, a few ahead. delta-rs pulls a stream it writes from its
    own async runtime, where anything that reads a Delta table (which starts a runtime) would panic."""

    _END = object()

    def __init__(self, batches: Iterator[pa.RecordBatch], ahead: int = 2) -> None:
        self.failed: BaseException | None = None
        self._queue: queue.Queue[object] = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(batches,), daemon=True)
        self._thread.start()

    def _produce(self, batches: Iterator[pa.RecordBatch]) -> None:
        try:
            for batch in batches:
                if not self._put(batch):
                    return
        except BaseException as exc:
            self.failed = exc
        self._put(self._END)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __next__(self) -> pa.RecordBatch:
        item = self._queue.get()
        if item is self._END:
            self._queue.put(self._END)  # a reader asking again gets the end again
            if self.failed is not None:
                raise self.failed
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the producer (the writer may have stopped reading early) and wait for it."""
        self._stop.set()
        self._thread.join()


def partition_batches(path: Location, day: str, columns: Sequence[str], rows: int) -> Iterator[pl.DataFrame]:
    """A daily partition's `columns` as frames of about `rows` rows, read as they come: memory holds one at a time."""
    if table_version(path) is None:
        raise TableNotFoundError(f"Delta table {path} does not exist yet: materialize its asset first")
    dataset = deltalake.DeltaTable(str(path)).to_pyarrow_dataset(file_pruning_predicate=[(PARTITION_COLUMN, "=", day)])
    pending: list[pa.RecordBatch] = []
    size = 0
    # One batch and one file read ahead: memory holds about a frame, whatever the partition's size.
    batches = dataset.to_batches(
        columns=list(columns), batch_size=rows, batch_readahead=1, fragment_readahead=1, use_threads=False
    )
    for batch in batches:
        pending.append(batch)
        size += batch.num_rows
        if size >= rows:
            yield pl.from_arrow(pa.Table.from_batches(pending))  # type: ignore[misc]
            pending, size = [], 0
    if size:
        yield pl.from_arrow(pa.Table.from_batches(pending))  # type: ignore[misc]
