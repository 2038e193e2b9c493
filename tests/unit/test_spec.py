from pathlib import Path

import pytest

from mlops_assets.spec import BUILTIN_SPECS_DIR, SpecError, load_spec, load_specs, parse_duration

FRAUD = BUILTIN_SPECS_DIR / "fraud.yaml"


def _write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _fraud_with(tmp_path: Path, old: str, new: str) -> Path:
    """The built-in spec with one edit, next to a copy of its shared include."""
    shared = tmp_path / "shared"
    shared.mkdir(exist_ok=True)
    text = (BUILTIN_SPECS_DIR / "shared" / "card_transactions.yaml").read_text()
    (shared / "card_transactions.yaml").write_text(text)
    spec_text = FRAUD.read_text()
    assert old in spec_text
    return _write(tmp_path, spec_text.replace(old, new), "fraud.yaml")


def test_builtin_example_loads_with_its_shared_definitions() -> None:
    (spec,) = load_specs()
    assert spec.name == "fraud"
    assert set(spec.sources) == {"transactions", "labels"}
    assert spec.feature_views["customer_velocity"].feature_names()[:3] == ["count_1h", "count_1d", "count_7d"]
    assert spec.feature_views["customer_channel_mix"].feature_names() is None
    assert spec.label.feature_cutoff == "before"


def test_misspelled_key_names_file_field_path_and_problem(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    text = (BUILTIN_SPECS_DIR / "shared" / "card_transactions.yaml").read_text()
    (shared / "card_transactions.yaml").write_text(text.replace("windows: [1h, 1d, 7d, 30d]", "windw: [1h]"))
    path = _write(tmp_path, FRAUD.read_text(), "fraud.yaml")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert str(path) in message
    assert "feature_views.customer_spend.aggregations[0].windw: unknown key" in message
    assert "feature_views.customer_spend.aggregations[0].windows: Field required" in message


def test_wrong_value_type_is_reported_with_expectation(tmp_path: Path) -> None:
    path = _fraud_with(tmp_path, "column: is_fraud", "column: [is_fraud]")
    with pytest.raises(SpecError, match=r"label\.column: Input should be a valid string"):
        load_spec(path)


def test_bad_duration_is_rejected(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    text = (BUILTIN_SPECS_DIR / "shared" / "card_transactions.yaml").read_text()
    (shared / "card_transactions.yaml").write_text(text.replace("ttl: 30d", "ttl: 30 days"))
    with pytest.raises(SpecError, match=r"feature_views\.customer_spend\.ttl: String should match pattern"):
        load_spec(_write(tmp_path, FRAUD.read_text(), "fraud.yaml"))
    with pytest.raises(ValueError, match="positive duration"):
        parse_duration("0d")
    assert parse_duration("90m").total_seconds() == 5400


def test_cross_references_are_checked(tmp_path: Path) -> None:
    path = _fraud_with(tmp_path, "prediction_timestamp: transaction_ts", "prediction_timestamp: predicted_at")
    with pytest.raises(SpecError, match=r"label\.prediction_timestamp: 'predicted_at' is not a column of source"):
        load_spec(path)
    path = _fraud_with(tmp_path, "keys: [customer_id]", "keys: [card_id]")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert "feature_views.customer_spend.source: entity key 'card_id' is not a column" in str(err.value)
    assert "label.source: entity key 'card_id'" in str(err.value)


def test_request_features_must_come_with_the_labels(tmp_path: Path) -> None:
    path = _fraud_with(tmp_path, "  country: {dtype: string}\n\nlabel", "  ip_address: {dtype: string}\n\nlabel")
    with pytest.raises(SpecError, match=r"request_features\.ip_address: .* not a column of source 'labels'"):
        load_spec(path)


def test_view_needs_exactly_one_definition(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        FRAUD.read_text().replace(
            "include: [shared/card_transactions.yaml]",
            f"include: [{BUILTIN_SPECS_DIR}/shared/card_transactions.yaml]",
        )
        + "feature_views:\n  empty_view: {source: transactions, ttl: 1d}\n",
    )
    with pytest.raises(SpecError, match=r"feature_views\.empty_view: Value error, declare exactly one of"):
        load_spec(path)


def test_two_specs_share_sources_and_feature_views(tmp_path: Path) -> None:
    for name in ("fraud_cards", "fraud_online"):
        text = FRAUD.read_text().replace("name: fraud", f"name: {name}")
        text = text.replace("shared/card_transactions.yaml", str(BUILTIN_SPECS_DIR / "shared/card_transactions.yaml"))
        _write(tmp_path, text, f"{name}.yaml")
    cards, online = load_specs(tmp_path)
    assert cards.feature_views == online.feature_views
    assert cards.sources["transactions"] == online.sources["transactions"]


def test_including_a_name_twice_is_an_error(tmp_path: Path) -> None:
    text = FRAUD.read_text().replace(
        "include: [shared/card_transactions.yaml]",
        f"include: [{BUILTIN_SPECS_DIR}/shared/card_transactions.yaml]",
    )
    text += "sources:\n  labels: {path: 'x/{date}.csv', event_timestamp: t, columns: {t: {dtype: datetime}}}\n"
    with pytest.raises(SpecError, match=r"sources\.labels: declared here and in"):
        load_spec(_write(tmp_path, text))


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(_write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path / "missing.yaml")
    with pytest.raises(SpecError, match="specs folder not found"):
        load_specs(tmp_path / "nowhere")


def test_duplicate_pipeline_names_in_a_folder(tmp_path: Path) -> None:
    text = FRAUD.read_text().replace(
        "shared/card_transactions.yaml", str(BUILTIN_SPECS_DIR / "shared/card_transactions.yaml")
    )
    _write(tmp_path, text, "a.yaml")
    _write(tmp_path, text, "b.yml")
    with pytest.raises(SpecError, match="pipeline 'fraud' is declared by more than one file"):
        load_specs(tmp_path)


def test_fingerprint_changes_with_the_declaration_only() -> None:
    (spec,) = load_specs()
    (again,) = load_specs()
    assert spec.fingerprint() == again.fingerprint()
    view = spec.feature_views["customer_spend"]
    assert view.fingerprint() != view.model_copy(update={"ttl": "7d"}).fingerprint()


def test_serving_section_errors_name_the_field(tmp_path: Path) -> None:
    path = _fraud_with(
        tmp_path,
        "rules:\n      - {feature: amount, above: 2000, score: 0.5}\n  rollout: shadow",
        "rules:\n      - {feature: amount_typo, above: 2000, score: 0.5}\n      - {feature: amount, score: 0.1}\n"
        "  rollout: canary",
    )
    text = path.read_text().replace("canary_share: 0.1", "canary_share: 0")
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert "serving.fallback.rules[1]: Value error, declare exactly one of 'above', 'below' or 'isin'" in str(err.value)
    path.write_text(text.replace("      - {feature: amount, score: 0.1}\n", ""))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert "serving.fallback.rules[0].feature: 'amount_typo' is not a request feature" in str(err.value)
    assert "serving.canary_share: a canary rollout needs a share above 0" in str(err.value)


def test_label_request_id_must_be_a_column_of_the_label_source(tmp_path: Path) -> None:
    path = _fraud_with(tmp_path, "request_id: transaction_id", "request_id: txn")
    with pytest.raises(SpecError, match=r"label\.request_id: 'txn' is not a column of source 'labels'"):
        load_spec(path)


def test_an_entity_pattern_must_be_a_regular_expression(tmp_path: Path) -> None:
    path = _fraud_with(tmp_path, "pattern: '^c\\d{6}$'", "pattern: '^c(['")
    with pytest.raises(SpecError, match=r"entity\.pattern: Value error, not a regular expression"):
        load_spec(path)


def test_a_spec_names_code_only_inside_the_packages_it_may_run(tmp_path: Path) -> None:
    """Specs are data: a dotted path elsewhere is refused before anything is imported."""
    path = _fraud_with(
        tmp_path, "estimator: sklearn.ensemble.HistGradientBoostingClassifier", "estimator: subprocess.Popen"
    )
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert "model.estimator: 'subprocess.Popen' is outside the packages this spec may run code from" in str(err.value)
    assert "add its top-level package to code_packages" in str(err.value)
    # A look-alike of a trusted package is not that package.
    path = _fraud_with(tmp_path, "sklearn.ensemble.HistGradientBoostingClassifier", "sklearnx.Evil")
    with pytest.raises(SpecError, match=r"model\.estimator: 'sklearnx\.Evil' is outside"):
        load_spec(path)
    shared = tmp_path / "shared" / "card_transactions.yaml"
    shared.write_text(shared.read_text().replace("mlops_assets.examples.custom_features:channel_mix", "os:system"))
    with pytest.raises(SpecError, match=r"feature_views\.customer_channel_mix\.function: 'os:system' is outside"):
        load_spec(_write(tmp_path, FRAUD.read_text(), "fraud.yaml"))
    # Declared by the user, their own package is allowed.
    trusted = FRAUD.read_text().replace("owner: team:fraud-ml", "owner: team:fraud-ml\ncode_packages: [os]")
    assert load_spec(_write(tmp_path, trusted, "fraud.yaml")).code_packages == ["os"]
