"""The manual stays true: the spec reference is generated from the models and committed current, every field says
what it is, and every link and test the README and docs/ name exists."""

import re
import typing
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from mlops_assets import spec_reference
from mlops_assets.spec import PipelineSpec
from mlops_assets.spec_reference import anchor, main, reachable_models, render

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "spec-reference.md"
MANUAL = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def models_of(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation holds, found independently of the module under test."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Annotated:
        args = args[:1]
    return [model for arg in args for model in models_of(arg)]


def every_model(root: type[BaseModel] = PipelineSpec) -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []
    todo = [root]
    while todo:
        model = todo.pop()
        if model not in seen:
            seen.append(model)
            todo += [m for info in model.model_fields.values() for m in models_of(info.annotation)]
    return seen


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_the_committed_spec_reference_is_current() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == render(), (
        f"{REFERENCE.relative_to(ROOT)} is stale: regenerate it with "
        "`.venv/bin/python -m mlops_assets.spec_reference docs/spec-reference.md` and commit it"
    )


def test_every_field_of_every_reachable_model_is_in_the_reference() -> None:
    text = render()
    models = every_model()
    assert {entry.model for entry in reachable_models()} == set(models)
    for model in models:
        rows = section(text, model.__name__)
        missing = [name for name in model.model_fields if not re.search(rf"^\| `([^`]*\.)?{name}` \|", rows, re.M)]
        assert not missing, f"{model.__name__}: fields {missing} are not in its section of the reference"


def test_every_field_says_what_it_is() -> None:
    undescribed = [
        f"{model.__name__}.{name}"
        for model in every_model()
        for name, info in model.model_fields.items()
        if not (info.description or "").strip()
    ]
    assert not undescribed, f"{len(undescribed)} spec fields without Field(description=...): {undescribed}"


def test_every_model_says_what_it_is() -> None:
    undocumented = [model.__name__ for model in every_model() if not (model.__dict__.get("__doc__") or "").strip()]
    assert not undocumented, f"spec models without a docstring (the intro of their section): {undocumented}"


class Inner(BaseModel):
    """An inner section."""

    level: float = Field(default=0.5, ge=0, le=1, description="a share")


class Outer(BaseModel):
    """The top level."""

    mode: Literal["shadow", "canary"] = Field(default="shadow", description="how")
    workers: int = Field(default=4, ge=1, description="how many")
    window: Annotated[str, Field(pattern=r"^\d+d$")] = Field(default="7d", description="how long")
    start: date = Field(description="when")
    parts: dict[Annotated[str, Field(pattern="^[a-z]+$")], Inner] = Field(min_length=1, description="by name")
    layers: list[Inner] = Field(default_factory=list, description="in order")
    spare: Inner | None = Field(default=None, description="maybe")
    nested: Inner = Field(default_factory=Inner, description="defaults")


def test_a_model_is_rendered_with_paths_readable_types_defaults_and_descriptions() -> None:
    text = render(Outer)
    assert "| `mode` | one of: `shadow`, `canary` | `shadow` | how |" in text
    assert "| `workers` | int ≥ 1 | `4` | how many |" in text
    assert "| `window` | text matching `^\\d+d$` | `7d` | how long |" in text
    assert "| `start` | date (YYYY-MM-DD) | required | when |" in text
    assert "| `parts` | mapping (at least 1 entry) of name (matching `^[a-z]+$`) → [Inner](#inner) | required |" in text
    assert "| `layers` | list of [Inner](#inner) | `[]` | in order |" in text
    assert "| `spare` | [Inner](#inner), or null | `null` | maybe |" in text
    assert "| `nested` | [Inner](#inner) | each field's default | defaults |" in text
    inner = section(text, "Inner")
    assert "An inner section." in inner and "At `parts.<name>`, `layers[]`, `spare`, `nested`." in inner
    assert "| `level` | float between 0 and 1 | `0.5` | a share |" in inner  # shared: its field, not one path
    assert render(Outer) == text


def test_the_spec_durations_read_as_durations() -> None:
    assert "duration like `1h`, `7d`, `30d`" in render()


def test_check_exits_1_on_a_stale_file_and_says_how_to_regenerate_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "reference.md"
    assert main([str(target)]) == 0
    assert main(["--check", str(target)]) == 0
    target.write_text(target.read_text(encoding="utf-8") + "edited by hand\n", encoding="utf-8")
    assert main(["--check", str(target)]) == 1
    assert f"python -m {spec_reference.__name__} {target}" in capsys.readouterr().err


def headings(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {anchor(title.replace("`", "")) for title in re.findall(r"^#+ (.+)$", text, re.M)}


def links(path: Path) -> list[str]:
    """The targets of a markdown file's links and images, outside code blocks and code spans."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", MANUAL, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_link_of_the_manual_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target):  # http(s), mailto: not checked here
            continue
        file, _, fragment = target.partition("#")
        resolved = (page.parent / file).resolve() if file else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in headings(resolved):
            broken.append(f"{target}: no heading #{fragment} in {resolved.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_every_test_the_manual_names_exists() -> None:
    """The guarantees name the test that proves each promise: a renamed test must not leave the promise unproved."""
    missing = []
    for page in MANUAL:
        for named in sorted(set(re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", page.read_text(encoding="utf-8")))):
            file, test = ROOT / named[0], named[1]
            if not file.exists():
                missing.append(f"{page.name}: {named[0]}")
            elif test and not re.search(rf"def {test}\(", file.read_text(encoding="utf-8")):
                missing.append(f"{page.name}: {named[0]}::{test}")
    assert not missing, missing
