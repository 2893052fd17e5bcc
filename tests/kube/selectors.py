"""Label and field selectors (`?labelSelector=`, `?fieldSelector=`) as predicates on objects."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]

# `key in (a,b)`, `key notin (a,b)`, `key=v`, `key==v`, `key!=v`, `key`, `!key`
_SET_TERM = re.compile(r"^\s*([^\s!=(]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQUALITY_TERM = re.compile(r"^\s*([^\s!=]+)\s*(==|=|!=)\s*([^\s]*)\s*$")
_EXISTS_TERM = re.compile(r"^\s*(!?)\s*([^\s!=]+)\s*$")


def _terms(selector: str) -> list[str]:
    """Split on commas outside parentheses."""
    return [term for term in re.split(r",(?![^()]*\))", selector) if term.strip()]


def label_selector(selector: str) -> Predicate:
    checks: list[Callable[[dict[str, str]], bool]] = []
    for term in _terms(selector):
        if match := _SET_TERM.match(term):
            key, operator, values = match[1], match[2], {v.strip() for v in match[3].split(",")}
            if operator == "in":
                checks.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                checks.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif match := _EQUALITY_TERM.match(term):
            key, operator, value = match[1], match[2], match[3]
            if operator == "!=":
                checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                checks.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif match := _EXISTS_TERM.match(term):
            negated, key = match[1] == "!", match[2]
            checks.append(lambda labels, k=key, n=negated: (k in labels) != n)
        else:
            raise ValueError(f"unable to parse requirement: {term!r}")
    return lambda obj: all(check(obj.get("metadata", {}).get("labels") or {}) for check in checks)


def _field(obj: dict[str, Any], dotted: str) -> str:
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def field_selector(selector: str) -> Predicate:
    """Any dotted field, compared as a string (the real server allows only a few fields per kind)."""
    checks: list[Predicate] = []
    for term in _terms(selector):
        match = _EQUALITY_TERM.match(term)
        if not match:
            raise ValueError(f"invalid field selector: {term!r}")
        path, operator, value = match[1], match[2], match[3]
        if operator == "!=":
            checks.append(lambda obj, p=path, v=value: _field(obj, p) != v)
        else:
            checks.append(lambda obj, p=path, v=value: _field(obj, p) == v)
    return lambda obj: all(check(obj) for check in checks)


def from_params(params: dict[str, str]) -> Predicate:
    """The conjunction of the request's selectors (everything matches when there are none)."""
    labels = label_selector(params.get("labelSelector", ""))
    fields = field_selector(params.get("fieldSelector", ""))
    return lambda obj: labels(obj) and fields(obj)
