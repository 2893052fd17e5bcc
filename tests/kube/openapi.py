"""`/openapi/v3` generated from the served kinds.

kubectl reads it to learn that the server validates fields itself (the PATCH
operation takes `fieldValidation`); it then sends `fieldValidation=Strict`
and leaves validation to the server instead of failing on a missing schema.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from typing import Any

from tests.kube.resources import Kind

OPEN_SCHEMA = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
QUERY_PARAMETERS = ("fieldValidation", "fieldManager", "dryRun")


def group_version_path(kind: Kind) -> str:
    return f"apis/{kind.group}/{kind.version}" if kind.group else f"api/{kind.version}"


def _schema_name(kind: Kind) -> str:
    reversed_group = ".".join(reversed(kind.group.split("."))) if kind.group else "io.k8s.api.core"
    return f"{reversed_group}.{kind.version}.{kind.kind}"


def _operation(kind: Kind, action: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{_schema_name(kind)}"}
    return {
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": kind.group, "version": kind.version, "kind": kind.kind},
        "parameters": [
            {"name": name, "in": "query", "schema": {"type": "string"}} for name in QUERY_PARAMETERS
        ],
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}},
    }


def _paths(kind: Kind) -> dict[str, Any]:
    scope = "/namespaces/{namespace}" if kind.namespaced else ""
    collection = f"/{group_version_path(kind)}{scope}/{kind.plural}"
    item = {
        verb: _operation(kind, action)
        for verb, action in (("get", "get"), ("put", "put"), ("patch", "patch"), ("delete", "delete"))
    }
    paths = {
        collection: {"get": _operation(kind, "list"), "post": _operation(kind, "post")},
        f"{collection}/{{name}}": item,
    }
    if kind.has_status:
        paths[f"{collection}/{{name}}/status"] = item
    return paths


def group_version_document(kinds: list[Kind]) -> dict[str, Any]:
    """The OpenAPI 3 document of one group/version."""
    schemas = {
        _schema_name(kind): {
            **(kind.schema or OPEN_SCHEMA),
            "x-kubernetes-group-version-kind": [
                {"group": kind.group, "version": kind.version, "kind": kind.kind}
            ],
        }
        for kind in kinds
    }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes API emulator", "version": "v1"},
        "paths": {path: item for kind in kinds for path, item in _paths(kind).items()},
        "components": {"schemas": schemas},
    }


def documents(kinds: list[Kind]) -> dict[str, dict[str, Any]]:
    """Every group/version document, keyed by its path (`apis/lth.dev/v1alpha1`, `api/v1`)."""
    grouped: dict[str, list[Kind]] = defaultdict(list)
    for kind in kinds:
        grouped[group_version_path(kind)].append(kind)
    return {path: group_version_document(members) for path, members in grouped.items()}


def index(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`/openapi/v3`: where each group/version document is, with a hash that changes with it."""

    def digest(doc: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16].upper()

    return {
        "paths": {
            path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest(doc)}"}
            for path, doc in docs.items()
        }
    }
