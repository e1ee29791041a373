"""YAML configs with named variants, validated into frozen dataclasses.

A config file is a mapping; an optional ``variants:`` mapping holds named overrides that are
deep-merged onto the base when selected (``load_yaml(path, variant="test")``), e.g. a tiny
``test`` variant used by CI::

    train: {epochs: 300, batch_size: 4}
    variants:
      test: {train: {epochs: 2}}

:func:`dataclass_from_dict` builds a frozen dataclass from a section and rejects unknown keys
with a :class:`~difcrys.errors.ConfigError` naming them.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any

from difcrys.errors import ConfigError

__all__ = ["deep_merge", "load_yaml", "dataclass_from_dict", "dump_yaml"]


def deep_merge(base: dict, override: dict) -> dict:
    """Recursively merge ``override`` onto a copy of ``base`` (mappings merge, other values replace)."""
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_yaml(path, variant: str | None = None) -> dict:
    """Read a YAML config and apply a named variant.

    Raises:
        ConfigError: missing file, invalid YAML, not a mapping, or unknown variant.
    """
    import yaml

    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path) as fh:
            d = yaml.safe_load(fh)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: a config must be a mapping, got {type(d).__name__}")
    variants = d.pop("variants", {}) or {}
    if variant is not None:
        if variant not in variants:
            raise ConfigError(f"{path}: unknown variant {variant!r}; available: {sorted(variants)}")
        d = deep_merge(d, variants[variant])
        d["variant"] = variant
    return d


def dump_yaml(d: dict, path) -> None:
    import yaml

    with open(path, "w") as fh:
        yaml.safe_dump(d, fh, sort_keys=False)


def dataclass_from_dict(cls, d: dict | None, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys with a ConfigError."""
    d = dict(d or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)} in section {where or cls.__name__}; "
                          f"known: {sorted(known)}")
    try:
        return cls(**d)
    except TypeError as e:
        raise ConfigError(f"section {where or cls.__name__}: {e}") from None
