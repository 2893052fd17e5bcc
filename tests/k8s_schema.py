"""Validate objects against the openAPIV3Schema of a real CRD, as strictly as the API server.

The API server prunes unknown fields of a custom resource silently, so a
misspelt field would vanish there without an error; here every object node
without `x-kubernetes-preserve-unknown-fields` refuses unknown properties
instead. `x-kubernetes-int-or-string` becomes a JSON-Schema type union;
OpenAPI v3.0 bounds follow draft 4 (boolean exclusiveMinimum). CEL rules
(`x-kubernetes-validations`) are not evaluated. `metadata` is checked against a
small ObjectMeta schema, since CRDs leave it to the API server.

    errors = schema_errors(obj)          # [] when valid; one 'path: message' per problem
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LTH_SHARED_DIR", ROOT.parent / "shared"))
"""CI lays shared/ beside the checkout; LTH_SHARED_DIR points elsewhere (a git worktree)."""
UPSTREAM_CRDS = SHARED / "upstream-crds"
LOCAL_CRDS = ROOT / "crds"

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"},
        "namespace": {"type": "string", "minLength": 1},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        "ownerReferences": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["apiVersion", "kind", "name", "uid"],
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "name": {"type": "string"},
                    "uid": {"type": "string"},
                    "controller": {"type": "boolean"},
                    "blockOwnerDeletion": {"type": "boolean"},
                },
            },
        },
    },
}


def _strict(node: Any) -> Any:
    """A copy of an OpenAPI schema node in draft-4 terms, closed to unknown fields."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("anyOf", None)
        out["type"] = ["integer", "string"]
    if node.get("nullable"):
        out.pop("nullable")
        if "type" in out:
            out["type"] = [*([out["type"]] if isinstance(out["type"], str) else out["type"]), "null"]
    preserve = node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-embedded-resource")
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not preserve
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def _crds() -> dict[tuple[str, str], dict[str, Any]]:
    """openAPIV3Schema by (apiVersion, kind), from the upstream CRDs and our own."""
    if not UPSTREAM_CRDS.is_dir():
        raise FileNotFoundError(
            f"{UPSTREAM_CRDS} is missing: lay shared/ beside the checkout or set LTH_SHARED_DIR"
        )
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in [*sorted(UPSTREAM_CRDS.glob("*.yaml")), *sorted(LOCAL_CRDS.glob("*.yaml"))]:
        for doc in yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                found[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return found


@functools.cache
def validator(api_version: str, kind: str) -> jsonschema.Draft4Validator:
    """The strict validator of one custom resource kind; KeyError names what is known."""
    try:
        schema = _strict(_crds()[(api_version, kind)])
    except KeyError:
        raise KeyError(f"no CRD for {api_version} {kind}; known: {sorted(_crds())}") from None
    schema["properties"]["metadata"] = OBJECT_META
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    return jsonschema.Draft4Validator(schema)


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """Every way `obj` breaks its CRD's schema, as 'path: message' lines."""
    errors = validator(obj["apiVersion"], obj["kind"]).iter_errors(obj)
    return sorted(f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors)
