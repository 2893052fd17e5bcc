"""The CRD: generated from the models, committed, valid, and enforcing what a schema can."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from lth.api.crd import crd, crd_yaml
from tests.api.test_api import BROKEN, EXAMPLES

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "crds" / "lotteryticketruns.lth.dev.yaml"


def schema() -> dict[str, Any]:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_committed_crd_equals_the_generated_one() -> None:
    assert COMMITTED.read_text() == crd_yaml(), "crds/ drifted from the API models: run `make crd`"


def test_crd_object_validates_against_kubernetes_schemas() -> None:
    kubernetes_validate.validate(yaml.safe_load(COMMITTED.read_text()), "1.34", strict=True)


def _walk(node: dict[str, Any], path: str) -> list[str]:
    """Structural-schema violations under `node`, by path."""
    bad = []
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        bad.append(f"{path}: no type")
    for forbidden in ("anyOf", "oneOf", "allOf", "$ref", "const", "uniqueItems", "title"):
        if forbidden in node:
            bad.append(f"{path}: {forbidden}")
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in node and node[key] is not True:
            bad.append(f"{path}: {key} must be a boolean beside minimum/maximum")
    for name, child in node.get("properties", {}).items():
        bad.extend(_walk(child, f"{path}.{name}"))
    if "items" in node:
        bad.extend(_walk(node["items"], f"{path}[]"))
    if isinstance(node.get("additionalProperties"), dict):
        bad.extend(_walk(node["additionalProperties"], f"{path}{{}}"))
    return bad


def test_schema_is_structural() -> None:
    assert _walk(schema(), "") == []


def test_status_subresource_and_printer_columns() -> None:
    version = crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Phase", "Level", "Density", "Top-1", "Progress", "Best", "Reason", "Ticket", "Age"]
    names = crd()["spec"]["names"]
    assert (names["plural"], names["shortNames"]) == ("lotteryticketruns", ["ltr"])


def test_nested_sections_default_so_the_api_server_fills_them() -> None:
    spec = schema()["properties"]["spec"]
    assert spec["properties"]["training"]["default"] == {}
    assert spec["properties"]["training"]["properties"]["epochs"]["default"] == 90
    assert spec["properties"]["training"]["properties"]["milestones"]["default"] == [30, 60, 80]
    assert spec["required"] == ["dataset"]
    assert not _keys_named("default", schema()["properties"]["status"])  # status is never defaulted


def _keys_named(key: str, node: Any) -> list[Any]:
    if isinstance(node, dict):
        return ([node[key]] if key in node else []) + [v for n in node.values() for v in _keys_named(key, n)]
    if isinstance(node, list):
        return [v for n in node for v in _keys_named(key, n)]
    return []


def _validator() -> jsonschema.Draft4Validator:
    # OpenAPI v3.0 bounds follow draft 4 (boolean exclusiveMinimum); x-kubernetes-* is ignored.
    return jsonschema.Draft4Validator(schema())


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_generated_schema(example: Path) -> None:
    errors = list(_validator().iter_errors(yaml.safe_load(example.read_text())))
    assert errors == []


SCHEMA_BROKEN = [(name, doc, field) for name, doc, field, by_schema in BROKEN if by_schema]


@pytest.mark.parametrize(
    ("doc", "field"), [(d, f) for _, d, f in SCHEMA_BROKEN], ids=[b[0] for b in SCHEMA_BROKEN]
)
def test_schema_refuses_what_a_schema_can_say(doc: dict[str, Any], field: str) -> None:
    errors = list(_validator().iter_errors(doc))
    assert errors, "the CRD schema accepted it"
    paths = set()
    for error in errors:
        path = ""
        for part in error.absolute_path:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        if error.validator == "required":
            path += "." + error.message.split("'")[1]
        paths.add(path)
    assert field in paths, paths
