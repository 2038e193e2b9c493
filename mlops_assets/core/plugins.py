"""Code a spec names by dotted path ('package.module:attribute'): feature functions, estimators' packages, data
generators. The spec checks that the path is in a package it may run code from before anything here imports it."""

from __future__ import annotations

import importlib
from typing import Any


class PluginError(ValueError):
    """A dotted path that does not name something importable."""


def load(dotted: str) -> Any:
    """The attribute `dotted` names ('package.module:attribute')."""
    module_name, _, attr = dotted.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"cannot load {dotted!r}: {exc}") from exc
