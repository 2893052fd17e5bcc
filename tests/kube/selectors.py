"""Label and field selectors (`?labelSelector=`, `?fieldSelector=`) as predicates on objects."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]
Requirement = tuple[str, str, frozenset[str]]  # key, operator, values

# `key in (a,b)`, `key notin (a,b)`, `key=v`, `key==v`, `key!=v`, `key`, `!key`
_SET_TERM = re.compile(r"^\s*([^\s!=(]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQUALITY_TERM = re.compile(r"^\s*([^\s!=]+)\s*(==|=|!=)\s*([^\s]*)\s*$")
_EXISTS_TERM = re.compile(r"^\s*(!?)\s*([^\s!=]+)\s*$")


def _parse(selector: str, allow_sets: bool) -> list[Requirement]:
    requirements = []
    for term in re.split(r",(?![^()]*\))", selector):  # commas outside parentheses
        if not term.strip():
            continue
        if allow_sets and (match := _SET_TERM.match(term)):
            values = frozenset(value.strip() for value in match[3].split(","))
            requirements.append((match[1], match[2], values))
        elif match := _EQUALITY_TERM.match(term):
            requirements.append((match[1], "notin" if match[2] == "!=" else "in", frozenset([match[3]])))
        elif allow_sets and (match := _EXISTS_TERM.match(term)):
            requirements.append((match[2], "absent" if match[1] else "exists", frozenset()))
        else:
            raise ValueError(f"unable to parse requirement: {term!r}")
    return requirements


def _holds(values: dict[str, str], requirement: Requirement) -> bool:
    key, operator, wanted = requirement
    match operator:
        case "in":
            return values.get(key) in wanted
        case "notin":
            return values.get(key) not in wanted  # as the server does: a missing key is "not in"
        case "exists":
            return key in values
        case _:
            return key not in values


def _field(obj: dict[str, Any], dotted: str) -> str:
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def label_selector(selector: str) -> Predicate:
    requirements = _parse(selector, allow_sets=True)

    def matches(obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(_holds(labels, requirement) for requirement in requirements)

    return matches


def field_selector(selector: str) -> Predicate:
    """Any dotted field, compared as a string (the real server allows only a few fields per kind)."""
    requirements = _parse(selector, allow_sets=False)

    def matches(obj: dict[str, Any]) -> bool:
        return all(_holds({key: _field(obj, key)}, (key, op, values)) for key, op, values in requirements)

    return matches


def from_params(params: dict[str, str]) -> Predicate:
    """The conjunction of the request's selectors (everything matches when there are none)."""
    labels = label_selector(params.get("labelSelector", ""))
    fields = field_selector(params.get("fieldSelector", ""))
    return lambda obj: labels(obj) and fields(obj)
