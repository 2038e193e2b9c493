"""The manual's recipes are specs that load: each YAML block of docs/recipes.md, merged into the example."""

import re
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from mlops_assets.app.starter import new_pipeline
from mlops_assets.core.features.views import collect, compute_features
from mlops_assets.spec import BUILTIN_SPECS_DIR, PipelineSpec, load_spec
from tests.public_data import nannyml_csv, write_csv

RECIPES = Path(__file__).resolve().parents[2] / "docs" / "recipes.md"


def recipe_blocks() -> list[dict[str, Any]]:
    blocks = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", RECIPES.read_text(), re.S)]
    assert blocks, f"no YAML recipe in {RECIPES}"
    return blocks


def merged(base: dict[str, Any], edit: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in edit.items():
        out[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def holds(loaded: Any, wanted: Any) -> bool:
    """Whether a loaded spec value has every field of the YAML that set it (defaults may add more)."""
    if isinstance(wanted, dict):
        fields = loaded if isinstance(loaded, dict) else loaded.model_dump()
        return all(key in fields and holds(fields[key], value) for key, value in wanted.items())
    return bool(loaded == wanted)


def recipe_spec(edit: dict[str, Any], folder: Path) -> PipelineSpec:
    """The built-in fraud spec with a recipe's edit, loaded from a copy of the examples in `folder`."""
    shutil.copytree(BUILTIN_SPECS_DIR, folder, dirs_exist_ok=True)
    spec_file = folder / "fraud.yaml"
    spec_file.write_text(yaml.safe_dump(merged(yaml.safe_load(spec_file.read_text()), edit)))
    return load_spec(spec_file)


@pytest.mark.parametrize("edit", recipe_blocks(), ids=lambda edit: next(iter(edit)))
def test_a_recipe_is_a_spec_that_loads(edit: dict[str, Any], tmp_path: Path) -> None:
    spec = recipe_spec(edit, tmp_path)
    for section, values in edit.items():
        assert holds(getattr(spec, section), values), (section, values)


def test_the_recipes_feature_view_computes_its_features(tmp_path: Path) -> None:
    (edit,) = [block for block in recipe_blocks() if "feature_views" in block]
    spec = recipe_spec(edit, tmp_path)
    (name,) = edit["feature_views"]
    events = pl.LazyFrame(
        {
            "customer_id": ["c000001", "c000001", "c000002"],
            "ts": pl.Series(["2026-03-01 10:00", "2026-03-01 12:00", "2026-03-01 11:00"]).str.to_datetime(),
            "amount": [10.0, 30.0, 5.0],
            "ingested_at": pl.Series(["2026-03-01 10:01", "2026-03-01 12:01", "2026-03-01 11:01"]).str.to_datetime(),
        }
    )
    frame = collect(compute_features(spec, name, events))
    assert set(spec.feature_views[name].feature_names()) <= set(frame.columns)
    second = frame.filter(pl.col("customer_id") == "c000001").sort("feature_timestamp").row(-1, named=True)
    assert second["amount_min_1d"] == 10.0 and second["amount_std_7d"] == pytest.approx(14.1421, rel=1e-4)


def test_the_readmes_production_fields_load_on_a_public_pipeline(tmp_path: Path) -> None:
    """The README's block of production fields, merged into the starter spec `mlops new` writes for NannyML's car
    loans (its `include` aside: tests/integration/test_shared_views.py runs a shared file)."""
    readme = RECIPES.parents[1] / "README.md"
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", readme.read_text(), re.S) if "scoring:" in b]
    edit = yaml.safe_load(block)
    assert edit.pop("include") == ["shared/loan_book.yaml"]
    specs, data = tmp_path / "specs", tmp_path / "data"
    new_pipeline(specs, data, "loans", write_csv(nannyml_csv("loans", 10), tmp_path / "loans.csv"))
    (data / "governance").mkdir()
    (data / "governance" / "groups.yaml").write_text("credit-leads: [bob, carol]\n")
    spec_file = specs / "loans.yaml"
    spec_file.write_text(yaml.safe_dump(merged(yaml.safe_load(spec_file.read_text()), edit), allow_unicode=True))
    spec = load_spec(spec_file)
    for section, values in edit.items():
        assert holds(getattr(spec, section), values), (section, values)
