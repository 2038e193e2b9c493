"""The spec reference: markdown generated from the pydantic models of the spec, so the manual cannot drift from them.

`python -m mlops_assets.spec_reference docs/spec-reference.md` writes it; with `--check` it exits 1 when the file
is stale. The models are walked from `PipelineSpec` through their annotations: a new section or field needs no
change here.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from mlops_assets import spec

DEFAULT_OUTPUT = Path("docs/spec-reference.md")
COMMAND = "python -m mlops_assets.spec_reference docs/spec-reference.md"
# How a dict key and a list item show in a field path: `sources.<name>.path`, `aggregations[].windows`.
KEY, ITEM = ".<name>", "[]"

_SCALARS: dict[Any, str] = {
    str: "text",
    int: "int",
    float: "float",
    bool: "bool",
    date: "date (YYYY-MM-DD)",
    datetime: "date-time (ISO 8601)",
    Any: "any",
    type(None): "null",
}


@dataclass
class ModelEntry:
    """A model reachable from the root, with every field path it is found at (in walking order)."""

    model: type[BaseModel]
    paths: list[str] = field(default_factory=list)


def reachable_models(root: type[BaseModel] = spec.PipelineSpec) -> list[ModelEntry]:
    """Every model reachable from `root` through field annotations, depth first in field order, root first."""
    found: dict[type[BaseModel], ModelEntry] = {}

    def visit(model: type[BaseModel], path: str) -> None:
        entry = found.get(model)
        if entry is not None:
            entry.paths.append(path)
            return
        found[model] = ModelEntry(model, [path])
        for name, info in model.model_fields.items():
            child = f"{path}.{name}" if path else name
            for nested, nested_path in _models_in(info.annotation, child):
                visit(nested, nested_path)

    visit(root, "")
    return list(found.values())


def _models_in(annotation: Any, path: str) -> Iterator[tuple[type[BaseModel], str]]:
    """The models an annotation holds, with the path each sits at (a dict's values, a list's items, a union's arms)."""
    annotation, _ = _unwrap(annotation)
    if _is_model(annotation):
        yield annotation, path
        return
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, tuple, set, frozenset, Sequence):
        for arg in args:
            yield from _models_in(arg, path + ITEM)
    elif origin is dict:
        yield from _models_in(args[1], path + KEY)
    elif _is_union(annotation):
        for arg in args:
            yield from _models_in(arg, path)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


@dataclass(frozen=True)
class _Examples:
    """Example values a field declares (shown with its type)."""

    values: tuple[Any, ...]


@dataclass(frozen=True)
class _Discriminator:
    """The field that tells the arms of a union apart."""

    name: str


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """`Annotated[T, ...]` -> (T, its metadata, with a FieldInfo's constraints and examples taken out of it)."""
    metadata: list[Any] = []
    while typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        for item in extra:
            if isinstance(item, FieldInfo):
                metadata += item.metadata
                if item.examples:
                    metadata.append(_Examples(tuple(item.examples)))
                if item.discriminator:
                    metadata.append(_Discriminator(str(item.discriminator)))
            else:
                metadata.append(item)
    return annotation, metadata


def _duration_pattern() -> str | None:
    """The pattern of the spec's duration type, so that such a text reads as a duration rather than a regex."""
    alias = getattr(spec, "Duration", None)
    if typing.get_origin(alias) is not Annotated:
        return None
    return next((getattr(m, "pattern", None) for m in _unwrap(alias)[1] if getattr(m, "pattern", None)), None)


def anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


class _Renderer:
    def __init__(self, entries: list[ModelEntry]) -> None:
        names = [entry.model.__name__ for entry in entries]
        self.titles = {
            entry.model: entry.model.__name__
            if names.count(entry.model.__name__) == 1
            else f"{entry.model.__module__}.{entry.model.__name__}"
            for entry in entries
        }
        self.duration = _duration_pattern()

    def link(self, model: type[BaseModel]) -> str:
        title = self.titles[model]
        return f"[{title}](#{anchor(title)})"

    def type_of(self, annotation: Any, metadata: Sequence[Any] = ()) -> str:
        """A readable type: `int ≥ 1`, `one of: shadow, canary`, `list of text`, `mapping of name → SourceSpec`."""
        annotation, inner = _unwrap(annotation)
        metadata = [*metadata, *inner]
        if _is_union(annotation):
            arms = [a for a in typing.get_args(annotation) if a is not type(None)]
            nullable = len(arms) < len(typing.get_args(annotation))
            discriminator = next((m.name for m in metadata if isinstance(m, _Discriminator)), None)
            if len(arms) == 1:
                text = self.type_of(arms[0], metadata)
            else:
                text = "one of " + ", ".join(self.type_of(arm) for arm in arms)
                text += f" (chosen by `{discriminator}`)" if discriminator else ""
            return f"{text}, or null" if nullable else text
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is Literal:
            return "one of: " + ", ".join(f"`{_value(a)}`" for a in args)
        if _is_model(annotation):
            return _joined(self.link(annotation), _constraints(metadata))
        if origin in (list, tuple, set, frozenset, Sequence):
            item = self.type_of(args[0]) if args else "any"
            return f"{_container('list', _constraints(metadata, 'entries'))} of {item}"
        if origin is dict or annotation is dict:
            key_rules = _constraints(_unwrap(args[0])[1], "characters") if args else []
            key = f"name ({', '.join(key_rules)})" if key_rules else "name"
            value = self.type_of(args[1]) if args else "any"
            return f"{_container('mapping', _constraints(metadata, 'entries'))} of {key} → {value}"
        if annotation is str:
            return self._text(metadata)
        base = _SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation)))
        bounds = _constraints(metadata)
        return f"{base} {', '.join(bounds)}" if bounds else base

    def _text(self, metadata: Sequence[Any]) -> str:
        pattern = next((m.pattern for m in metadata if getattr(m, "pattern", None)), None)
        examples = next((m.values for m in metadata if isinstance(m, _Examples)), ())
        shown = ", ".join(f"`{_value(e)}`" for e in examples)
        if pattern is not None and pattern == self.duration:
            return f"duration like {shown}" if shown else "duration"
        text = _joined("text", _constraints(metadata, "characters"))
        return text + (f", e.g. {shown}" if shown else "")


_LOWER = (("ge", "≥"), ("gt", ">"))
_UPPER = (("le", "≤"), ("lt", "<"))
_SINGULAR = {"entries": "entry", "characters": "character"}
# What a metadata item may constrain; an item with none of these is shown as it prints, never dropped.
_KNOWN = ("ge", "gt", "le", "lt", "min_length", "max_length", "multiple_of", "pattern", "allow_inf_nan", "strict")


def _constraints(metadata: Sequence[Any], unit: str = "") -> list[str]:
    """The constraints in pydantic's field metadata, in words: `≥ 1`, `between 0 and 1`, `at least 1 entry`."""
    lower = [(word, getattr(m, attr)) for m in metadata for attr, word in _LOWER if getattr(m, attr, None) is not None]
    upper = [(word, getattr(m, attr)) for m in metadata for attr, word in _UPPER if getattr(m, attr, None) is not None]
    if len(lower) == len(upper) == 1 and lower[0][0] == "≥" and upper[0][0] == "≤":
        parts = [f"between {_value(lower[0][1])} and {_value(upper[0][1])}"]
    else:
        parts = [f"{word} {_value(bound)}" for word, bound in lower + upper]
    for item in metadata:
        for attr, word in (("min_length", "at least"), ("max_length", "at most")):
            count = getattr(item, attr, None)
            if count is not None:
                parts.append(f"{word} {count} {_SINGULAR.get(unit, unit) if count == 1 else unit}".rstrip())
        if getattr(item, "multiple_of", None) is not None:
            parts.append(f"a multiple of {_value(item.multiple_of)}")
        if getattr(item, "pattern", None) is not None:
            parts.append(f"matching `{item.pattern}`")
        if getattr(item, "allow_inf_nan", None) is False:
            parts.append("finite")
        known = any(getattr(item, attr, None) is not None for attr in _KNOWN)
        if not known and not isinstance(item, _Examples | _Discriminator):
            parts.append(str(item))
    return parts


def _joined(kind: str, constraints: list[str]) -> str:
    """`text matching …, at most 64 characters`: a pattern reads best without a comma before it."""
    for part in constraints:
        kind += (" " if part.startswith("matching") else ", ") + part
    return kind


def _container(kind: str, constraints: list[str]) -> str:
    """`list (at least 1 entry)`: the container's own constraints before what it holds."""
    return f"{kind} ({', '.join(constraints)})" if constraints else kind


def _value(value: Any) -> str:
    """A value as it would be written in the YAML spec, on one line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, BaseModel):
        return _value(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str) and value == "":
        return '""'
    return str(value)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is None:
        return f"`{_value(info.default)}`"
    if getattr(info, "default_factory_takes_validated_data", False):  # pydantic 2.10+
        return "computed from the other fields"
    value = info.get_default(call_default_factory=True)  # the factory takes no argument (checked above)
    if isinstance(value, BaseModel) and _is_every_default(value):
        return "each field's default"
    return f"`{_value(value)}`"


def _is_every_default(value: BaseModel) -> bool:
    try:
        return value == type(value)()
    except ValueError:  # a model with required fields has no all-default instance
        return False


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _docstring(model: type[BaseModel]) -> str:
    """The model's own docstring (a docstring is not inherited from a base model)."""
    doc = model.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if doc else ""


def render(root: type[BaseModel] = spec.PipelineSpec) -> str:
    """The reference of every model reachable from `root` as markdown: one section and table per model."""
    entries = reachable_models(root)
    renderer = _Renderer(entries)
    lines = [
        "# Spec reference",
        "",
        f"<!-- Generated from the pydantic models of mlops_assets/spec.py by `{COMMAND}`: do not edit. -->",
        "",
        "Every field of a pipeline spec, generated from the models that validate it. [Writing a spec](spec.md)",
        "shows a whole spec with comments; `mlops check` validates yours. A field path reads `<name>` for a key you",
        "choose (a source, a feature view, a column) and `[]` for an item of a list.",
        "",
    ]
    lines += [f"- {renderer.link(entry.model)}: {_where(entry)}" for entry in entries]
    for entry in entries:
        model = entry.model
        lines += ["", f"## {renderer.titles[model]}", ""]
        doc = _docstring(model)
        if doc:
            lines += [doc, ""]
        lines += [f"At {_where(entry)}.", ""]
        shared = len(entry.paths) > 1
        lines += ["| field | type | default | description |", "|---|---|---|---|"]
        for name, info in model.model_fields.items():
            path = name if shared or not entry.paths[0] else f"{entry.paths[0]}.{name}"
            examples = [_Examples(tuple(info.examples))] if info.examples else []
            kind = renderer.type_of(info.annotation, [*info.metadata, *examples])
            if examples and not any(f"`{_value(e)}`" in kind for e in examples[0].values):
                kind += ", e.g. " + ", ".join(f"`{_value(e)}`" for e in examples[0].values)
            row = (f"`{path}`", kind, _default(info), info.description or "")
            lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def _where(entry: ModelEntry) -> str:
    paths = [f"`{p}`" for p in entry.paths if p]
    return ", ".join(paths) if paths else "the top level of a spec file"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from the models")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.path.read_text(encoding="utf-8") if args.path.exists() else None
        if current != text:
            command = f"python -m mlops_assets.spec_reference {args.path}"
            print(f"{args.path} is stale (the spec's models changed): regenerate it with `{command}`", file=sys.stderr)
            return 1
        print(f"{args.path} is current")
        return 0
    args.path.parent.mkdir(parents=True, exist_ok=True)
    args.path.write_text(text, encoding="utf-8")
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
