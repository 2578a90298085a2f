"""Frozen configuration objects, built once at an entry point, rejecting unknown keys."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or mapping is invalid; the message names the offending key."""


def build_config(cls: type[T], mapping: Mapping[str, Any], *, section: str = "") -> T:
    """Construct the frozen dataclass ``cls`` from ``mapping``, rejecting unknown keys.

    Lists become tuples (config objects hold only immutable values).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - names)
    where = f" in [{section}]" if section else ""
    if unknown:
        raise ConfigError(
            f"unknown configuration key(s){where}: {', '.join(unknown)}; known: {', '.join(sorted(names))}"
        )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in mapping.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid configuration{where}: {exc}") from exc


def load_toml_section(path: Path | None, section: str) -> dict[str, Any]:
    """One table of a TOML config file (empty when no file is given)."""
    if path is None:
        return {}
    with path.open("rb") as handle:
        document = tomllib.load(handle)
    unknown = sorted(set(document) - {"jobs", "schedule", "collector", "publish", "serve"})
    if unknown:
        raise ConfigError(f"{path}: unknown section(s): {', '.join(unknown)}")
    table = document.get(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{section}] must be a table")
    return table
