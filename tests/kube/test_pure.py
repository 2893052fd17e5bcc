"""The pure parts of the emulator: schema handling, printer-column JSONPath, selectors."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from tests.kube import schema
from tests.kube.printing import json_path, table
from tests.kube.resources import Kind
from tests.kube.selectors import label_selector

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                "fraction": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1},
                "port": {
                    "x-kubernetes-int-or-string": True,
                    "anyOf": [{"type": "integer"}, {"type": "string"}],
                },
                "limits": {"type": "object", "additionalProperties": {"type": "integer"}},
                "nested": {
                    "type": "object",
                    "default": {},
                    "properties": {"level": {"type": "integer", "default": 3}},
                },
                "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
    },
}


def admit(spec: dict[str, Any]) -> schema.Outcome:
    return schema.admit({"apiVersion": "x/v1", "kind": "X", "metadata": {}, "spec": spec}, SCHEMA)


def test_defaults_apply_inside_defaults() -> None:
    obj = {"metadata": {}, "spec": {}}
    schema.admit(obj, SCHEMA)
    assert obj["spec"] == {"nested": {"level": 3}}


def test_unknown_fields_are_pruned_and_reported_unless_preserved() -> None:
    obj = {"metadata": {"anything": 1}, "spec": {"extra": 1, "free": {"whatever": [1]}, "limits": {"cpu": 2}}}
    outcome = schema.admit(obj, SCHEMA)
    assert outcome.unknown_fields == ["spec.extra"]
    assert obj["spec"]["free"] == {"whatever": [1]} and obj["metadata"] == {"anything": 1}


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"name": "Ab"}, "spec.name: Invalid value: \"Ab\": spec.name in body should match '^[a-z]+$'"),
        ({"name": "abcdef"}, "spec.name: Too long: may not be longer than 5"),
        ({"fraction": 0}, "spec.fraction: Invalid value: 0: spec.fraction in body should be greater than 0"),
        (
            {"fraction": 1.5},
            "spec.fraction: Invalid value: 1.5: spec.fraction in body should be less than or equal to 1",
        ),
        (
            {"port": 1.5},
            'spec.port: Invalid value: "number": spec.port in body must be of type integer,string: "number"',
        ),
        (
            {"limits": {"cpu": "2"}},
            'spec.limits[cpu]: Invalid value: "string": spec.limits[cpu] in body must be of '
            'type integer: "string"',
        ),
        ({"tags": ["a", "b", "c"]}, "spec.tags: Too many: 3: must have at most 2 items"),
    ],
)
def test_validation_names_the_field_as_the_server_does(spec: dict[str, Any], error: str) -> None:
    assert admit(spec).errors == [error]


def test_int_or_string_accepts_both() -> None:
    assert admit({"port": 80}).errors == admit({"port": "http"}).errors == []


def test_json_path_of_printer_columns() -> None:
    job = {"status": {"conditions": [{"type": "Created"}, {"type": "Running"}]}}
    assert json_path(job, ".status.conditions[-1:].type") == ["Running"]
    assert json_path(job, ".status.conditions[*].type") == ["Created", "Running"]
    assert json_path(job, ".status.conditions[0].type") == ["Created"]
    assert json_path(job, ".status.missing") == []


def test_label_selector_forms() -> None:
    labels = {"metadata": {"labels": {"app": "lth", "tier": "gpu"}}}
    assert label_selector("app=lth,tier in (gpu, cpu),!missing")(labels)
    assert not label_selector("tier notin (gpu)")(labels)
    assert not label_selector("app!=lth")(labels)


def test_table_cells_are_typed_as_the_server_types_them() -> None:
    kind = Kind(
        "x",
        "v1",
        "things",
        "Thing",
        schema={},
        printer_columns=(
            {"name": "Attempts", "type": "string", "jsonPath": ".status.attempts"},
            {"name": "Level", "type": "integer", "jsonPath": ".status.level"},
            {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ),
    )
    created = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=3, seconds=20)).isoformat()
    thing = {
        "metadata": {"name": "a", "creationTimestamp": created},
        "spec": {"suspend": "no"},
        "status": {"attempts": 3, "level": 2.0},
    }
    (row,) = table(kind, [thing], "7")["rows"]
    assert row["cells"][:4] == ["a", "3", 2, None]
    assert row["cells"][4] in ("3m20s", "3m21s", "3m22s")  # a humanized age, as kubectl shows it
