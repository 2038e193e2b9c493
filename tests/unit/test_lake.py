import json
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from mlops_assets.core.lake import (
    PARTITION_COLUMN,
    TableDigest,
    TableNotFoundError,
    content_hash,
    io_path,
    is_remote,
    location,
    overwrite_table,
    replace_partitions,
    scan_table,
    table_path,
    table_version,
    unreachable,
)


def _day(day: str, values: list[int]) -> pl.DataFrame:
    return pl.DataFrame({PARTITION_COLUMN: [day] * len(values), "x": values})


def test_replacing_a_partition_is_idempotent_and_leaves_others_alone(tmp_path: Path) -> None:
    path = tmp_path / "t"
    replace_partitions(
        path, pl.concat([_day("2026-01-01", [1, 2]), _day("2026-01-02", [3])]), ["2026-01-01", "2026-01-02"]
    )
    before = scan_table(path).collect().sort("x")
    for _ in range(2):
        replace_partitions(path, _day("2026-01-01", [1, 2]), ["2026-01-01"])
    assert scan_table(path).collect().sort("x").equals(before)
    replace_partitions(path, _day("2026-01-01", [9]), ["2026-01-01"])
    assert scan_table(path).collect().sort("x")["x"].to_list() == [3, 9]
    assert scan_table(path, ["2026-01-02"]).collect()["x"].to_list() == [3]
    assert table_version(path) == 3  # four commits, versions count from 0


def test_replacing_with_no_rows_empties_the_partition(tmp_path: Path) -> None:
    path = tmp_path / "t"
    replace_partitions(path, _day("2026-01-01", [1]), ["2026-01-01"])
    replace_partitions(path, _day("2026-01-01", []).cast({"x": pl.Int64}), ["2026-01-01"])
    assert scan_table(path).collect().height == 0


def test_rows_outside_the_replaced_partitions_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1 rows of t fall outside"):
        replace_partitions(tmp_path / "t", _day("2026-01-03", [1]), ["2026-01-01"])
    assert table_version(tmp_path / "t") is None


def test_reading_a_table_never_written_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(TableNotFoundError, match="materialize its asset first"):
        scan_table(tmp_path / "nothing")


def test_overwrite_replaces_schema_too(tmp_path: Path) -> None:
    path = tmp_path / "t"
    overwrite_table(path, pl.DataFrame({"a": [1]}))
    overwrite_table(path, pl.DataFrame({"b": ["x", "y"]}))
    assert scan_table(path).collect().columns == ["b"]


def test_content_hash_ignores_row_order_but_not_content() -> None:
    frame = pl.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    assert content_hash(frame) == content_hash(frame.reverse())
    assert content_hash(frame) != content_hash(frame.with_columns(pl.col("a") + 1))
    assert content_hash(frame) != content_hash(frame.rename({"a": "c"}))
    assert content_hash(frame) != content_hash(pl.concat([frame, frame]))


def _writer(path: str, writer: int, days: list[str], rounds: int) -> None:
    """One process replacing `days` of a shared table `rounds` times, each time with rows saying who wrote them; the
    versions its commits returned go to `<path>.<writer>.json`."""
    versions = []
    for round_ in range(rounds):
        for day in days:
            frame = pl.DataFrame(
                {"row": list(range(500)), "writer": [writer] * 500, "round": [round_] * 500, PARTITION_COLUMN: day}
            )
            versions.append(replace_partitions(Path(path), frame, [day]))
    Path(f"{path}.{writer}.json").write_text(json.dumps(versions))


def test_concurrent_writers_of_one_table_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    """Real processes race on one Delta table: on other partitions and on the same one (a refused commit retries)."""
    import multiprocessing

    path = tmp_path / "t"
    replace_partitions(
        path, pl.DataFrame({"row": [0], "writer": [-1], "round": [0], PARTITION_COLUMN: ["2026-01-01"]}), ["2026-01-01"]
    )
    context = multiprocessing.get_context("spawn")
    jobs = [
        context.Process(target=_writer, args=(str(path), 0, ["2026-01-01", "2026-01-02"], 12)),
        context.Process(target=_writer, args=(str(path), 1, ["2026-01-01", "2026-01-03"], 12)),
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=120)
    assert [job.exitcode for job in jobs] == [0, 0]
    table = scan_table(path).collect()
    per_day = table.group_by(PARTITION_COLUMN).agg(
        pl.len().alias("rows"), pl.col("writer").n_unique().alias("writers"), pl.col("round").n_unique().alias("rounds")
    )
    # Every partition holds exactly one complete write: 500 rows, from one writer's one round.
    assert sorted(per_day.rows()) == [(d, 500, 1, 1) for d in ("2026-01-01", "2026-01-02", "2026-01-03")]
    assert table.filter(pl.col(PARTITION_COLUMN) == "2026-01-02")["writer"].unique().to_list() == [0]
    assert table.filter(pl.col(PARTITION_COLUMN) == "2026-01-03")["writer"].unique().to_list() == [1]
    # Each commit's own version, never the version another writer's commit moved the table on to.
    versions = [json.loads(Path(f"{path}.{w}.json").read_text()) for w in (0, 1)]
    assert all(v == sorted(set(v)) and len(v) == 24 for v in versions) and not set(versions[0]) & set(versions[1])


def test_a_table_overwritten_from_a_stream_of_frames_commits_once_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "t"
    overwrite_table(path, pl.DataFrame({"x": [0], "s": ["old"]}))
    frames = [pl.DataFrame({"x": [i, i + 1], "s": [None, f"v{i}"]}) for i in range(0, 6, 2)]
    assert overwrite_table(path, iter(frames)) == 1
    assert pl.read_delta(str(path)).sort("x").equals(pl.concat(frames))

    def failing() -> Iterator[pl.DataFrame]:
        yield frames[0]
        raise RuntimeError("the chunk after the first one fails")

    with pytest.raises(RuntimeError, match="after the first"):
        overwrite_table(path, failing())
    assert table_version(path) == 1 and pl.read_delta(str(path)).height == 6


def test_a_content_hash_fed_a_frame_at_a_time_equals_the_hash_of_the_whole() -> None:
    frame = pl.DataFrame({"x": list(range(100)), "s": [str(i % 7) for i in range(100)]})
    digest = TableDigest()
    for part in (frame[:13], frame[13:13], frame[13:]):
        digest.add(part)
    assert digest.rows == 100 and digest.hexdigest() == content_hash(frame.reverse())


def test_a_lake_location_is_a_local_folder_as_before_or_an_s3_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded default is the resolved data folder, a plain Path that polars and delta-rs open as before; an
    s3:// URI is a prefix in object storage that they open by its URI (no request is made to build either)."""
    monkeypatch.chdir(tmp_path)
    local = location("data")
    assert local == tmp_path / "data" and type(local) is type(tmp_path) and not is_remote(local)
    assert io_path(table_path(local, "fraud", "raw_transactions")) == tmp_path / "data/lake/fraud/raw_transactions"
    assert unreachable(local) is None  # a local folder is never checked over a network

    remote = location("s3://bucket/some/prefix/")
    assert is_remote(remote)
    assert (
        io_path(table_path(remote, "fraud", "raw_transactions"))
        == "s3://bucket/some/prefix/lake/fraud/raw_transactions"
    )
    with pytest.raises(ValueError, match="a local folder or s3://bucket/prefix, not gs://"):
        location("gs://bucket/prefix")
    # One rule with MLOPS_REPORTS_URI's (settings.object_store_uri): s3:// only, no query, no credentials in it.
    for refused in ("s3a://bucket/lake", "s3://bucket/lake?x=1", "s3://key:secret@bucket/lake", "s3:///lake"):
        with pytest.raises(ValueError, match="the lake is"):
            location(refused)
