"""Structural-schema handling of a CRD's openAPIV3Schema, as the API server does it.

Order as in the real server: prune unknown fields (reported, so that
`fieldValidation=Strict` can refuse them), apply defaults, then validate.
Messages copy the real server's wording, so a test that reads them reads what
`kubectl` would print against a real cluster.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

Schema = dict[str, Any]
JSON_TYPE_NAMES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


@dataclass
class Outcome:
    """What the schema made of one object."""

    unknown_fields: list[str] = field(default_factory=list)  # pruned; `Strict` refuses them
    errors: list[str] = field(default_factory=list)  # each one "path: message", as the server writes it


def admit(obj: dict[str, Any], schema: Schema) -> Outcome:
    """Prune, default and validate `obj` in place against a CRD version's openAPIV3Schema."""
    outcome = Outcome()
    _prune(obj, schema, "", outcome, is_root=True)
    _default(obj, schema)
    _validate(obj, schema, "", outcome.errors)
    return outcome


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(value: Any) -> str:
    return "null" if value is None else JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _quote(value: Any) -> str:
    return (
        json.dumps(value)
        if isinstance(value, str)
        else repr(value)
        if isinstance(value, float)
        else str(value)
    )


def _preserves_unknown(schema: Schema) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


def _prune(value: Any, schema: Schema, path: str, outcome: Outcome, is_root: bool = False) -> None:
    """Drop fields the schema does not know, and nulls where null is not allowed."""
    if isinstance(value, list):
        items = schema.get("items") or {}
        for index, item in enumerate(value):
            _prune(item, items, f"{path}[{index}]", outcome)
        return
    if not isinstance(value, dict):
        return
    properties: dict[str, Schema] = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    # The root and embedded resources always keep apiVersion, kind and metadata (not pruned here).
    kept = (
        {"apiVersion", "kind", "metadata"}
        if is_root or schema.get("x-kubernetes-embedded-resource")
        else set()
    )
    for key in list(value):
        if key in kept:
            continue
        child = (
            properties.get(key) if key in properties else additional if isinstance(additional, dict) else None
        )
        if child is None and not (_preserves_unknown(schema) or additional is True):
            del value[key]
            outcome.unknown_fields.append(_join(path, key))
        elif value[key] is None and not (child or {}).get("nullable"):
            del value[key]  # the server drops nulls that the schema does not allow, then defaults
        elif child is not None:
            _prune(value[key], child, _join(path, key), outcome)


def _default(value: Any, schema: Schema) -> None:
    """Fill absent fields from `default`, top-down, so defaults inside defaults apply too."""
    if isinstance(value, list):
        for item in value:
            _default(item, schema.get("items") or {})
    elif isinstance(value, dict):
        for key, child in (schema.get("properties") or {}).items():
            if key not in value and "default" in child:
                value[key] = copy.deepcopy(child["default"])
            if key in value:
                _default(value[key], child)
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key in value:
                _default(value[key], additional)


def _type_ok(value: Any, schema: Schema) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, str | int) and not isinstance(value, bool)
    expected = schema.get("type")
    if expected is None or (value is None and schema.get("nullable")):
        return True
    match expected:
        case "integer":
            return (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, float) and value.is_integer()
            )
        case "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        case _:
            return bool(_type_name(value) == expected)


def _validate(value: Any, schema: Schema, path: str, errors: list[str]) -> None:
    if not _type_ok(value, schema):
        got, expected = (
            _type_name(value),
            "integer,string" if schema.get("x-kubernetes-int-or-string") else schema["type"],
        )
        errors.append(f'{path}: Invalid value: "{got}": {path} in body must be of type {expected}: "{got}"')
        return
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_quote(option) for option in schema["enum"])
        errors.append(f"{path}: Unsupported value: {_quote(value)}: supported values: {supported}")
    for branch_key in ("allOf", "anyOf", "oneOf"):
        branches = schema.get(branch_key) or []
        passed = sum(not _errors_of(value, branch, path) for branch in branches)
        if (
            branches
            and not {"allOf": passed == len(branches), "anyOf": passed >= 1, "oneOf": passed == 1}[branch_key]
        ):
            errors.append(
                f"{path}: Invalid value: {_quote(value)}: {path} in body must match {branch_key} schemas"
            )
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int | float):
        _validate_bounds(value, schema, path, errors)
    elif isinstance(value, str):
        _validate_string(value, schema, path, errors)
    elif isinstance(value, list):
        _validate_array(value, schema, path, errors)
    elif isinstance(value, dict):
        _validate_object(value, schema, path, errors)


def _errors_of(value: Any, schema: Schema, path: str) -> list[str]:
    errors: list[str] = []
    _validate(value, schema, path, errors)
    return errors


def _validate_bounds(value: float, schema: Schema, path: str, errors: list[str]) -> None:
    prefix = f"{path}: Invalid value: {_quote(value)}: {path} in body should be"
    if "minimum" in schema:
        if schema.get("exclusiveMinimum") and value <= schema["minimum"]:
            errors.append(f"{prefix} greater than {schema['minimum']}")
        elif value < schema["minimum"]:
            errors.append(f"{prefix} greater than or equal to {schema['minimum']}")
    if "maximum" in schema:
        if schema.get("exclusiveMaximum") and value >= schema["maximum"]:
            errors.append(f"{prefix} less than {schema['maximum']}")
        elif value > schema["maximum"]:
            errors.append(f"{prefix} less than or equal to {schema['maximum']}")


def _validate_string(value: str, schema: Schema, path: str, errors: list[str]) -> None:
    prefix = f"{path}: Invalid value: {_quote(value)}: {path} in body should"
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{prefix} be at least {schema['minLength']} chars long")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{path}: Too long: may not be longer than {schema['maxLength']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{prefix} match '{schema['pattern']}'")


def _validate_array(value: list[Any], schema: Schema, path: str, errors: list[str]) -> None:
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(
            f"{path}: Invalid value: {len(value)}: {path} in body should have at least "
            f"{schema['minItems']} items"
        )
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{path}: Too many: {len(value)}: must have at most {schema['maxItems']} items")
    items = schema.get("items") or {}
    for index, item in enumerate(value):
        _validate(item, items, f"{path}[{index}]", errors)


def _validate_object(value: dict[str, Any], schema: Schema, path: str, errors: list[str]) -> None:
    for key in schema.get("required") or []:
        if key not in value:
            errors.append(f"{_join(path, key)}: Required value")
    properties: dict[str, Schema] = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        if key in properties:
            _validate(item, properties[key], _join(path, key), errors)
        elif isinstance(additional, dict):
            _validate(item, additional, f"{path}[{key}]", errors)
