"""Check rendered values the way ``helm`` does: coalesce them over the chart's defaults, validate with its schema."""
from __future__ import annotations

import copy
from typing import Any

import jsonschema


def helm_coalesce(defaults: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of user values over chart defaults: nested maps merge, a null value deletes the key. Pure."""
    merged = copy.deepcopy(defaults)
    for key, value in values.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = helm_coalesce(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def schema_errors(values: dict[str, Any], schema: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    """Every schema violation of ``values`` coalesced over ``defaults``, as 'path: message'; [] when valid. Pure."""
    validator = jsonschema.Draft7Validator(schema)
    return sorted(f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
                  for error in validator.iter_errors(helm_coalesce(defaults, values)))
