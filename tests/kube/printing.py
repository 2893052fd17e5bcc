"""Server-side printing: `meta.k8s.io/v1` Tables built from a kind's printer columns."""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

from tests.kube.resources import Kind

NAME_COLUMN = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "priority": 0,
    "description": "Name must be unique within a namespace.",
}
_STEP = re.compile(
    r"\.([A-Za-z0-9_-]+)|\[(-?\d*)(:?)(-?\d*)\]|\[\*\]|\[\?\(@\.([A-Za-z0-9_-]+)==[\"']([^\"']*)[\"']\)\]"
)


def json_path(obj: Any, path: str) -> list[Any]:
    """The values at a printer column's JSONPath: `.a.b`, `.a[0]`, `.a[-1:]`, `.a[*].b`, `[?(@.k=="v")]`."""
    values = [obj]
    for step in _STEP.finditer(path.strip("{}")):
        key, start, is_slice, stop, field, equals = step.groups()
        found: list[Any] = []
        for value in values:
            if field is not None:  # a filter: [?(@.type=="Progressing")]
                if isinstance(value, list):
                    found.extend(v for v in value if isinstance(v, dict) and str(v.get(field)) == equals)
            elif key is not None:
                if isinstance(value, dict) and key in value:
                    found.append(value[key])
            elif isinstance(value, list):
                if step.group(0) == "[*]" or is_slice:
                    found.extend(value[int(start) if start else None : int(stop) if stop else None])
                elif -len(value) <= int(start) < len(value):
                    found.append(value[int(start)])
        values = found
    return values


def human_age(timestamp: str, now: datetime.datetime) -> str:
    """As `kubectl` prints ages: 45s, 3m20s, 5h, 3d4h (a shortened HumanDuration)."""
    created = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = max(0, int((now - created).total_seconds()))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    return f"{days}d{hours % 24}h" if days < 8 and hours % 24 else f"{days}d"


def _cell(obj: dict[str, Any], column: dict[str, Any], now: datetime.datetime) -> Any:
    """As the server types a cell: strings are printed, other types pass only if the value fits.

    A built-in kind's column may carry `cell`: the server's own printer for it (printJob's Status)."""
    if callable(column.get("cell")):
        return column["cell"](obj, now)
    values = json_path(obj, column["jsonPath"])
    value = values[0] if values else None
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    match column["type"]:
        case _ if value is None:
            return None
        case "string":
            return " ".join(v if isinstance(v, str) else json.dumps(v) for v in values)
        case "integer" if is_number:
            return int(value)
        case "number" if is_number:
            return value
        case "boolean" if isinstance(value, bool):
            return value
        case "date" if isinstance(value, str):
            return human_age(value, now)
    return None


def _row_object(obj: dict[str, Any], include: str) -> dict[str, Any] | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}


def table(
    kind: Kind,
    objects: list[dict[str, Any]],
    resource_version: str,
    include_object: str = "PartialObjectMetadata",
    headers: bool = True,
) -> dict[str, Any]:
    """A Table of the objects; `headers=False` for the watch events after the first, as the server does."""
    now = datetime.datetime.now(datetime.UTC)
    columns = [
        {
            "name": column["name"],
            "type": column["type"],
            "format": column.get("format", ""),
            "description": column.get("description", ""),
            "priority": column.get("priority", 0),
        }
        for column in kind.printer_columns
    ]
    rows = []
    for obj in objects:
        row: dict[str, Any] = {
            "cells": [obj["metadata"]["name"], *(_cell(obj, c, now) for c in kind.printer_columns)]
        }
        if (row_object := _row_object(obj, include_object)) is not None:
            row["object"] = row_object
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [NAME_COLUMN, *columns] if headers else None,
        "rows": rows,
    }
