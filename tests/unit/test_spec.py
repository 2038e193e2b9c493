from pathlib import Path

import pytest

from mlops_assets.spec import (
    BUILTIN_SPECS_DIR,
    SpecError,
    load_spec,
    load_specs,
    looks_like_model_output,
    name_tokens,
    parse_duration,
)

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


def _problems(path: Path) -> str:
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    return str(err.value)


def test_the_label_or_what_comes_with_it_is_never_a_request_feature(tmp_path: Path) -> None:
    path = _fraud_with(tmp_path, "  country: {dtype: string}\n\nlabel", "  is_fraud: {dtype: int}\n\nlabel")
    assert "request_features.is_fraud: 'is_fraud' is the label (label.column): it is not known" in _problems(path)
    path = _fraud_with(tmp_path, "  country: {dtype: string}\n\nlabel", "  confirmed_at: {dtype: datetime}\n\nlabel")
    assert "request_features.confirmed_at: 'confirmed_at' is when the label became known" in _problems(path)
    path = _fraud_with(tmp_path, "  feature_cutoff: before", "  feature_cutoff: before\n  known_with_label: [country]")
    assert "request_features.country: 'country' is known only with the label (label.known_with_label)" in _problems(
        path
    )
    path = _fraud_with(tmp_path, "  feature_cutoff: before", "  feature_cutoff: before\n  known_with_label: [refund]")
    assert "label.known_with_label: 'refund' is not a column of source 'labels'" in _problems(path)


def test_the_label_is_never_aggregated_into_a_view(tmp_path: Path) -> None:
    view = (
        "feature_views:\n  label_history:\n    source: labels\n    ttl: 30d\n"
        "    aggregations:\n      - {column: is_fraud, functions: [mean], windows: [30d]}\n"
    )
    text = FRAUD.read_text().replace(
        "shared/card_transactions.yaml", str(BUILTIN_SPECS_DIR / "shared/card_transactions.yaml")
    )
    message = _problems(_write(tmp_path, text + view))
    assert "feature_views.label_history.aggregations[0].column: 'is_fraud' is the label (label.column)" in message
    assert "(leakage)" in message


def test_a_feature_named_like_another_column_of_the_training_set_is_refused(tmp_path: Path) -> None:
    text = FRAUD.read_text().replace(
        "shared/card_transactions.yaml", str(BUILTIN_SPECS_DIR / "shared/card_transactions.yaml")
    )
    # `count` over 1d is named count_1d: a request feature of that name would be overwritten in the join.
    path = _write(tmp_path, text.replace("  country: {dtype: string}\n\nlabel", "  count_1d: {dtype: int}\n\nlabel"))
    # The label source has no count_1d column, so add it there too (request features come from the label source).
    shared = (BUILTIN_SPECS_DIR / "shared" / "card_transactions.yaml").read_text()
    shared = shared.replace("      is_fraud:", "      count_1d: {dtype: int}\n      is_fraud:")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "card_transactions.yaml").write_text(shared)
    path.write_text(
        path.read_text().replace(
            str(BUILTIN_SPECS_DIR / "shared/card_transactions.yaml"), "shared/card_transactions.yaml"
        )
    )
    assert "feature_views.customer_velocity: feature 'count_1d' has the name of a request feature" in _problems(path)


def test_feature_clashes_of_a_custom_view_are_found_by_name(tmp_path: Path) -> None:
    (spec,) = load_specs()
    assert spec.feature_clash_problems("customer_channel_mix", ["online_share_7d"]) == []
    problems = spec.feature_clash_problems("customer_channel_mix", ["is_fraud", "amount", "count_1h", "customer_id"])
    assert problems == [
        "feature_views.customer_channel_mix: feature 'is_fraud' has the name of the label (label.column); "
        "rename the feature",
        "feature_views.customer_channel_mix: feature 'amount' has the name of a request feature; rename the feature",
        "feature_views.customer_channel_mix: feature 'count_1h' is also a feature of view 'customer_velocity'; "
        "rename one",
        "feature_views.customer_channel_mix: feature 'customer_id' has the name of an entity key; rename the feature",
    ]


def test_columns_named_like_a_model_output_are_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert name_tokens("yPredProba") == ["y", "pred", "proba"]
    assert not looks_like_model_output("salary_range") and not looks_like_model_output("scored_by")
    assert looks_like_model_output("y_pred") and looks_like_model_output("fraud_score")
    path = _fraud_with(
        tmp_path,
        "  country: {dtype: string}\n\nlabel",
        "  country: {dtype: string}\n  risk_score: {dtype: float}\n\nlabel",
    )
    shared = tmp_path / "shared" / "card_transactions.yaml"
    shared.write_text(
        shared.read_text().replace("      is_fraud:", "      risk_score: {dtype: float}\n      is_fraud:")
    )
    with caplog.at_level("WARNING"):
        spec = load_spec(path)
    (warning,) = spec.warnings()
    assert warning.startswith("request_features: 'risk_score' is named like another model's output (score)")
    assert "risk_score" in caplog.text and str(path) in caplog.text


def test_each_task_has_its_metrics_gate_and_fallback(tmp_path: Path) -> None:
    regression = _fraud_with(
        tmp_path,
        "  threshold: 0.5\n  metrics: [roc_auc, pr_auc, log_loss, precision, recall]\n",
        "  task: regression\n",
    )
    regression.write_text(
        regression.read_text()
        .replace("metric: pr_auc\n  minimum: 0.3", "minimum: 5.0")
        .replace("score: 0.02", "score: 12.5")
        .replace("score: 0.5}", "score: 80.0}")
    )
    spec = load_spec(regression)
    assert spec.model.metrics == ["rmse", "mae", "r2", "mape"]
    assert spec.promotion.metric == "rmse"
    assert spec.serving.fallback.score_for({"amount": 5000}) == (80.0, "fallback rule 0 (amount)")
    wrong = regression.read_text().replace("task: regression", "task: regression\n  metrics: [rmse, roc_auc]")
    assert "model: Value error, metrics ['roc_auc'] do not apply to task 'regression'" in _problems(
        _write(tmp_path, wrong, "wrong.yaml")
    )
    threshold = regression.read_text().replace("task: regression", "task: regression\n  threshold: 0.3")
    assert "'threshold' applies to binary models only" in _problems(_write(tmp_path, threshold, "threshold.yaml"))
    multiclass = (
        regression.read_text().replace("task: regression", "task: multiclass").replace("minimum: 5.0", "minimum: 0.4")
    )
    message = _problems(_write(tmp_path, multiclass, "multiclass.yaml"))
    assert "serving.fallback: a multiclass fallback answers a class: declare 'label', not 'score'" in message
    assert "serving.fallback.rules[0]: a multiclass fallback answers a class" in message
    labelled = multiclass.replace("score: 12.5", "label: legit").replace("score: 80.0}", "label: review}")
    spec = load_spec(_write(tmp_path, labelled, "labelled.yaml"))
    assert spec.promotion.metric == "macro_f1"
    assert spec.serving.fallback.score_for({"amount": 1}) == ("legit", "fallback default score")
    binary = FRAUD.read_text().replace("score: 0.02", "score: 2.0")
    assert "serving.fallback.score: a binary fallback's score is a probability in [0, 1]" in _problems(
        _write(tmp_path, binary, "binary.yaml")
    )


def test_types_that_could_never_join_are_refused_on_load(tmp_path: Path) -> None:
    """A key typed differently in two sources, or a request feature typed unlike its training column."""
    path = _fraud_with(tmp_path, "  country: {dtype: string}\n\nlabel", "  country: {dtype: int}\n\nlabel")
    assert (
        "request_features.country: declared int, but column 'country' of source 'labels' (where training takes it "
        "from) is string" in _problems(path)
    )
    path = _fraud_with(tmp_path, "keys: [customer_id]", "keys: [customer_id]")
    shared = tmp_path / "shared" / "card_transactions.yaml"  # the transactions' key an int, the labels' a string
    shared.write_text(shared.read_text().replace("customer_id: {dtype: string", "customer_id: {dtype: int", 1))
    assert (
        "entity.keys: 'customer_id' has a different type in different sources (sources.transactions.columns."
        "customer_id: int, sources.labels.columns.customer_id: string)" in _problems(path)
    )


def test_a_generator_is_a_plugin_checked_like_other_code_the_spec_names(tmp_path: Path) -> None:
    """The spec schema knows no generator: the demo's is a plugin whose params its own model checks, located."""
    path = _fraud_with(tmp_path, "keys: [customer_id]", "keys: [customer_id]")
    shared = tmp_path / "shared" / "card_transactions.yaml"
    text = shared.read_text()
    demo = "function: mlops_assets.demo.generator:fraud_tables"
    edits = {
        ("generator: demo.transactions", "generator: demo.refunds"): "sources.transactions.generator: unknown table "
        "'refunds' (generator 'demo' writes ['transactions', 'labels'])",
        ("generator: demo.transactions", "generator: other.transactions"): "sources.transactions.generator: unknown "
        "generator 'other' (known: ['demo'])",
        ("customers: 5000", "customers: -1"): "generators.demo.params.customers: Input should be greater than or "
        "equal to 1",
        (demo, "function: os.path:join"): "generators.demo.function: 'os.path:join' is outside the packages this "
        "spec may run code from",
        (demo, "function: mlops_assets.demo.generator:nothing"): "generators.demo.function: cannot load "
        "'mlops_assets.demo.generator:nothing'",
    }
    for (old, new), problem in edits.items():
        shared.write_text(text.replace(old, new, 1))
        assert problem in _problems(path)


def _namespaced(folder: Path, namespace: str = "card_transactions", edit: tuple[str, str] = ("", "")) -> Path:
    """The built-in shared file with a `namespace` (and one edit), in `folder`/shared."""
    (folder / "shared").mkdir(parents=True, exist_ok=True)
    text = (BUILTIN_SPECS_DIR / "shared" / "card_transactions.yaml").read_text().replace(*edit)
    path = folder / "shared" / f"{namespace}.yaml"
    path.write_text(f"namespace: {namespace}\n{text}")
    return path


def _pipeline(folder: Path, name: str, include: Path, edit: tuple[str, str] = ("", "")) -> Path:
    text = FRAUD.read_text().replace("name: fraud", f"name: {name}").replace(*edit)
    return _write(folder, text.replace("shared/card_transactions.yaml", str(include)), f"{name}.yaml")


def test_a_namespaced_include_shares_its_sources_and_views_as_the_namespaces(tmp_path: Path) -> None:
    shared = _namespaced(tmp_path)
    cards, online = (load_spec(_pipeline(tmp_path, name, shared)) for name in ("fraud_cards", "fraud_online"))
    assert cards.shared.feature_views == {v: "card_transactions" for v in cards.feature_views}
    assert cards.view_namespace("customer_spend") == "card_transactions" == cards.source_namespace("labels")
    assert cards.views_of("fraud_cards") == [] and cards.namespaces() == ["card_transactions"]
    for kind, name in (("sources", "transactions"), ("feature_views", "customer_spend")):
        assert cards.definition_hash(kind, name) == online.definition_hash(kind, name)
        assert cards.code_version(kind, name) == cards.definition_hash(kind, name)
    # Without a namespace, an include is copied into each pipeline as before.
    plain = load_spec(_pipeline(tmp_path, "fraud", BUILTIN_SPECS_DIR / "shared" / "card_transactions.yaml"))
    assert plain.view_namespace("customer_spend") == "fraud" and plain.namespaces() == []


def test_pipelines_sharing_a_table_must_declare_it_alike(tmp_path: Path) -> None:
    shared = _namespaced(tmp_path)
    _pipeline(tmp_path, "fraud_cards", shared)
    _pipeline(tmp_path, "fraud_online", shared, ("start_date: 2026-01-01", "start_date: 2026-01-05"))
    with pytest.raises(SpecError) as err:
        load_specs(tmp_path)
    assert "card_transactions/feature_views.customer_spend: fraud_cards.yaml and fraud_online.yaml declare it" in str(
        err.value
    )
    assert "(start_date)" in str(err.value)


def test_two_files_declaring_one_shared_view_differently_are_refused(tmp_path: Path) -> None:
    _pipeline(tmp_path, "fraud_cards", _namespaced(tmp_path))
    other = tmp_path / "other"
    changed = _namespaced(other, edit=("ttl: 30d", "ttl: 31d"))
    _pipeline(tmp_path, "fraud_online", changed)
    with pytest.raises(SpecError, match=r"declare it differently \(feature_views\.\w+\)"):
        load_specs(tmp_path)


def test_namespace_mistakes_are_located(tmp_path: Path) -> None:
    shared = _namespaced(tmp_path, "fraud")
    assert "is also the namespace of" in _problems(_pipeline(tmp_path, "fraud", shared))
    by_hand = _pipeline(
        tmp_path, "cards", _namespaced(tmp_path), ("owner:", "shared: {sources: {labels: elsewhere}}\nowner:")
    )
    assert "shared: set by `include`" in _problems(by_hand)
    # A shared view cannot read a source of one pipeline: it would be a different table for each.
    view = "feature_views:\n  own_spend: {source: own, ttl: 1d, aggregations: [{functions: [count], windows: [3d]}]}\n"
    columns = "{t: {dtype: datetime}, customer_id: {dtype: string}}"
    source = f"sources:\n  own: {{path: 'o/{{date}}.csv', event_timestamp: t, columns: {columns}}}\n"
    path = tmp_path / "shared" / "mixed.yaml"
    path.write_text(f"namespace: mixed\n{view}")
    text = FRAUD.read_text().replace(
        "shared/card_transactions.yaml", f"{BUILTIN_SPECS_DIR}/shared/card_transactions.yaml, {path}"
    )
    problems = _problems(_write(tmp_path, text + source, "mixed.yaml"))
    assert "feature_views.own_spend: shared in namespace 'mixed', so its source 'own' must be declared" in problems


def _label_declared(tmp_path: Path, declaration: str, task: str = "binary") -> Path:
    """The built-in spec with `is_fraud` declared as `declaration` in the labels source, and a model of `task`."""
    path = _fraud_with(tmp_path, "  threshold: 0.5\n  metrics: [roc_auc, pr_auc, log_loss, precision, recall]\n", "")
    if task != "binary":
        text = path.read_text().replace("  seed: 42\n", f"  seed: 42\n  task: {task}\n")
        path.write_text(text.replace("metric: pr_auc\n  minimum: 0.3", "minimum: 0.3"))
    shared = tmp_path / "shared" / "card_transactions.yaml"
    old = "is_fraud: {dtype: int, nullable: false, min: 0, max: 1}"
    assert old in shared.read_text()
    shared.write_text(shared.read_text().replace(old, f"is_fraud: {declaration}"))
    return path


def test_a_label_whose_declared_type_cannot_fit_the_task_is_refused_on_load(tmp_path: Path) -> None:
    """Said by `mlops check` with file and field, not by training after ingest and features have run."""
    where = "label.column: 'is_fraud' is declared"
    yes_no = _problems(_label_declared(tmp_path, "{dtype: string, isin: ['Yes', 'No']}"))
    assert f"{where} string in sources.labels.columns; a binary label is 0/1 or true/false" in yes_no
    assert "declare it dtype bool, and its values ['Yes', 'No'] are read as true/false when the files are" in yes_no
    named = _problems(_label_declared(tmp_path, "{dtype: string, isin: [good, bad]}"))
    assert "declare it bool (ingest reads true/false, yes/no" in named and "model.task: multiclass" in named
    for dtype in ("string", "bool"):
        refused = _problems(_label_declared(tmp_path, f"{{dtype: {dtype}}}", task="regression"))
        assert f"{where} {dtype} in sources.labels.columns; a regression label is a number" in refused
    dated = _problems(_label_declared(tmp_path, "{dtype: date}", task="multiclass"))
    assert f"{where} date in sources.labels.columns; a label is a number, a bool or text" in dated
    # What each task can learn loads: a bool or 0/1 binary label, text classes, a number to regress.
    assert load_spec(_label_declared(tmp_path, "{dtype: bool}")).model.task == "binary"
    assert load_spec(_label_declared(tmp_path, "{dtype: float}", task="regression")).model.task == "regression"
    classes = _label_declared(tmp_path, "{dtype: string}", task="multiclass")
    assert "label.column" not in _problems(classes)  # its only problems are the binary fallback's scores
