"""Lazy public entry points for the service packages.

A service's ``__init__`` names what other rooms may use (``from services.text import TextPart``) without
importing torch, Ray or MLflow until a name is first touched: the CLI imports every service to build its
parser, and must stay quick. What is not listed is the service's private business.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """``(__getattr__, __all__)`` for ``package``: each public name → the submodule (relative) defining it,
    as ``"module"`` (same name there) or ``"module:attribute"``."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module '{package}' has no public name '{name}'")
        module, _, attribute = names[name].partition(":")
        return getattr(importlib.import_module(f"{package}.{module}"), attribute or name)

    return __getattr__, sorted(names)
