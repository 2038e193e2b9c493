"""PII in what serving writes (dropped or keyed-hashed before a record exists) and the prediction log's retention."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from mlops_assets.core.lake import PARTITION_COLUMN, replace_partitions, scan_table
from mlops_assets.core.serving.prediction_log import LOG_SCHEMA, read_day, write_batch
from mlops_assets.core.serving.privacy import (
    HASH_PREFIX,
    PiiKeyMissing,
    PiiRule,
    purge_prediction_log,
    retention_cutoff,
)
from mlops_assets.core.serving.scorer import Scorer
from mlops_assets.spec import PipelineSpec, SpecError, load_spec
from tests.helpers import SMALL_SPEC
from tests.unit.test_scorer import MODEL, Registry, _logged, _scorer

KEY = "a-test-key-of-our-own"


def _spec(tmp_path: Path, serving: dict[str, Any], email: bool = False) -> PipelineSpec:
    """The small shop spec with `serving`; `email`: the customer's email comes with each request too."""
    data = yaml.safe_load(SMALL_SPEC + MODEL)
    data["serving"] = serving
    if email:
        data["request_features"]["email"] = {"dtype": "string"}
        data["sources"]["returns"]["columns"]["email"] = {"dtype": "string"}
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


def _problems(tmp_path: Path, serving: dict[str, Any], **more: Any) -> str:
    with pytest.raises(SpecError) as error:
        data = yaml.safe_load(SMALL_SPEC + MODEL)
        data["serving"] = serving
        data.update(more)
        path = tmp_path / "shop.yaml"
        path.write_text(yaml.safe_dump(data))
        load_spec(path)
    return str(error.value)


def test_a_pii_field_must_be_a_request_feature_and_never_an_entity_key_or_a_slice(tmp_path: Path) -> None:
    problems = _problems(tmp_path, {"pii": {"fields": {"email": "drop"}}})
    assert "serving.pii.fields.email: 'email' is not a request field (request features: ['amount'])" in problems
    problems = _problems(tmp_path, {"pii": {"fields": {"user_id": "hash"}}})
    assert "serving.pii.fields.user_id: 'user_id' is an entity key" in problems
    model = yaml.safe_load(MODEL)["model"] | {"slice_by": "amount"}
    problems = _problems(tmp_path, {"pii": {"fields": {"amount": "hash"}}}, model=model)
    assert "serving.pii.fields.amount: 'amount' is model.slice_by" in problems
    problems = _problems(tmp_path, {"pii": {"fields": {"amount": "encrypt"}}})
    assert "serving.pii.fields.amount: Input should be 'drop' or 'hash'" in problems
    assert "serving.pii.fields: Dictionary should have at least 1 item" in _problems(tmp_path, {"pii": {"fields": {}}})


def test_a_retention_shorter_than_monitoring_reads_is_refused(tmp_path: Path) -> None:
    problems = _problems(tmp_path, {"log_retention": "3d"})
    assert "serving.log_retention: 3d is shorter than monitoring.performance_window (7d)" in problems
    assert "serving.log_retention: Value error, the prediction log is kept by whole days" in _problems(
        tmp_path, {"log_retention": "200h"}
    )
    assert _spec(tmp_path, {"log_retention": "7d"}).serving.log_retention == "7d"


def test_a_hashed_field_without_its_key_is_refused_when_the_rule_is_made(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {"pii": {"fields": {"amount": "hash"}, "hash_key_env": "SHOP_PII_KEY"}})
    for environ in ({}, {"SHOP_PII_KEY": ""}):
        with pytest.raises(PiiKeyMissing, match=r"shop: serving.pii.fields hashes \['amount'\].*SHOP_PII_KEY"):
            PiiRule.of(spec, environ)
    # Dropping needs no key.
    dropping = _spec(tmp_path, {"pii": {"fields": {"amount": "drop"}}})
    assert PiiRule.of(dropping, {}).drop == {"amount"}


def test_scrub_drops_and_hashes_with_the_key_and_never_shows_it(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {"pii": {"fields": {"amount": "hash", "email": "drop"}}}, email=True)
    rule = PiiRule.of(spec, {"MLOPS_PII_KEY": KEY})
    scrubbed = rule.scrub({"user_id": "u1", "amount": 12.5, "email": "ann@example.org"})
    expected = hmac.new(KEY.encode(), b"12.5", hashlib.sha256).hexdigest()
    assert scrubbed == {"user_id": "u1", "amount": HASH_PREFIX + expected}
    assert rule.scrub({"amount": None}) == {"amount": None}  # nothing to hide
    assert rule.pseudonym(12.5) == rule.pseudonym(12.5) != rule.pseudonym(12.6)
    other = PiiRule.of(spec, {"MLOPS_PII_KEY": "another key"})
    assert other.pseudonym(12.5) != rule.pseudonym(12.5)
    assert KEY not in repr(rule)


def _scorer_with(spec: PipelineSpec, folder: Path, pii: PiiRule | None) -> Scorer:
    """test_scorer's scorer (online rows for u0..u49, champion version 1), with `pii`."""
    folder.mkdir()
    plain = _scorer(
        spec.model_copy(update={"serving": spec.serving.model_copy(update={"pii": None})}), Registry(spec), folder
    )
    return Scorer(spec, plain.models, plain.features, plain.log, pii=pii)


def test_the_scorer_answers_from_the_raw_value_and_logs_only_its_hash(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {"pii": {"fields": {"amount": "hash"}}})
    plain = _spec(tmp_path, {})
    with pytest.raises(ValueError, match=r"serving\.pii is declared: give the scorer its PiiRule"):
        _scorer_with(spec, tmp_path / "none", None)
    rule = PiiRule.of(spec, {"MLOPS_PII_KEY": KEY})
    requests = [{"user_id": "u1", "amount": 4242.125, "request_id": "r1"}]

    scorer = _scorer_with(spec, tmp_path / "pii", rule)
    answer = scorer.score(requests)[0]
    logged = _logged(scorer, tmp_path / "pii")
    reference = _scorer_with(plain, tmp_path / "plain", None)
    assert reference.score(requests)[0] == answer  # the model saw 4242.125 either way
    assert json.loads(_logged(reference, tmp_path / "plain").row(0, named=True)["request"])["amount"] == 4242.125

    record = logged.row(0, named=True)
    assert json.loads(record["request"]) == {"user_id": "u1", "amount": rule.pseudonym(4242.125)}
    assert json.loads(record["features"])["amount"] == rule.pseudonym(4242.125)
    files = [p for p in (tmp_path / "pii").rglob("*") if p.is_file()]
    assert files and not [p for p in files if b"4242.125" in p.read_bytes()]
    assert not [p for p in files if KEY.encode() in p.read_bytes()]


def _day(day: str, value: str) -> pl.DataFrame:
    row = {k: None for k in LOG_SCHEMA} | {"request_id": f"r-{day}", "request": json.dumps({"note": value})}
    frame = pl.DataFrame([row], schema=LOG_SCHEMA)
    return frame.with_columns(pl.lit(day).alias(PARTITION_COLUMN))


def test_purge_deletes_old_days_files_and_partitions_and_vacuums_them_away(tmp_path: Path) -> None:
    folder, table = tmp_path / "prediction_log" / "shop", tmp_path / "lake" / "shop" / "prediction_log"
    days = ["2026-03-01", "2026-03-02", "2026-03-03"]
    for day in days:
        write_batch(
            folder, [json.dumps({"request_id": f"r-{day}", "request": f"secret-{day}"})], date.fromisoformat(day)
        )
        replace_partitions(table, _day(day, f"secret-{day}"), [day])
    replace_partitions(table, _day(days[0], "secret-2026-03-01"), [days[0]])  # an older version's file, unreferenced

    assert retention_cutoff("2d", date(2026, 3, 4)) == date(2026, 3, 3)
    purged = purge_prediction_log(folder, table, date(2026, 3, 3))
    assert purged.log_days == purged.table_days == ["2026-03-01", "2026-03-02"]
    assert purged.vacuumed_files >= 3
    assert scan_table(table).collect().get_column(PARTITION_COLUMN).to_list() == ["2026-03-03"]
    assert read_day(folder, date(2026, 3, 3)).height == 1
    # Every file as a reader finds it (Parquet pages are compressed): the old days' values are nowhere, not even in
    # the table log's file statistics.
    contents = {
        p: str(pl.read_parquet(p).to_dicts()).encode() if p.suffix == ".parquet" else p.read_bytes()
        for p in tmp_path.rglob("*")
        if p.is_file()
    }
    assert [p for p, text in contents.items() if b"secret-2026-03-01" in text or b"secret-2026-03-02" in text] == []
    assert [p for p, text in contents.items() if b"secret-2026-03-03" in text]
    # Again: nothing left to remove.
    again = purge_prediction_log(folder, table, date(2026, 3, 3))
    assert again.log_days == again.table_days == [] and again.vacuumed_files == 0
