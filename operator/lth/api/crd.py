"""The CustomResourceDefinition, generated from the API models.

pydantic writes JSON Schema (draft 2020-12) with `$defs`, `anyOf` for optional
fields and numeric exclusive bounds; the API server wants a *structural*
OpenAPI v3 schema: every node typed, references inlined, no `anyOf` around
types, boolean exclusive bounds, list types instead of `uniqueItems`. This
module is that translation, plus the printer columns and subresources.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from lth import api

_KEPT = (
    "description",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "format",
)

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Level", "type": "integer", "jsonPath": ".status.level"},
    {"name": "Density", "type": "number", "jsonPath": ".status.density"},
    {"name": "Top-1", "type": "number", "jsonPath": ".status.top1"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
    {"name": "Best", "type": "string", "jsonPath": ".status.best.summary"},
    # What the run is doing, or why it is stuck (ImagePullBackOff, Unschedulable, WaitingForQueue...).
    {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Progressing")].reason'},
    {"name": "Ticket", "type": "string", "jsonPath": ".status.ticket.source", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _models(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model reachable from `root`, by the name pydantic gives its `$defs` entry."""
    found: dict[str, type[BaseModel]] = {}
    stack: list[type[BaseModel]] = [root]
    while stack:
        model = stack.pop()
        if model.__name__ in found:
            continue
        found[model.__name__] = model
        for field in model.model_fields.values():
            for arg in _type_args(field.annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    stack.append(arg)
    return found


def _type_args(annotation: Any) -> list[Any]:
    args = [annotation]
    for inner in getattr(annotation, "__args__", ()) or ():
        args.extend(_type_args(inner))
    return args


def _string_or_object(variants: list[dict[str, Any]]) -> bool:
    kinds = sorted("object" if "$ref" in v else str(v.get("type")) for v in variants)
    return kinds == ["object", "string"]


def _factory_defaults(model: type[BaseModel]) -> dict[str, Any]:
    """Defaults pydantic leaves out of its schema: those made by a default_factory.

    A nested section defaults to `{}`, so the API server fills in its own defaults.
    """
    defaults: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if field.default_factory is None:
            continue
        value = field.default_factory()  # type: ignore[call-arg]
        alias = field.alias or name
        defaults[alias] = {} if isinstance(value, BaseModel) else value
    return defaults


class _Translator:
    def __init__(self, root: type[BaseModel], *, with_defaults: bool) -> None:
        schema = root.model_json_schema(by_alias=True, mode="validation")
        self.defs: dict[str, Any] = schema.pop("$defs", {})
        self.root = schema
        self.models = _models(root)
        self.with_defaults = with_defaults

    def translate(self) -> dict[str, Any]:
        return self._node(self.root, model_name=self.root.get("title"))

    def _node(self, node: dict[str, Any], model_name: str | None = None) -> dict[str, Any]:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            merged = {**self.defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
            return self._node(merged, model_name=name)
        variants = node.get("anyOf") or node.get("oneOf")
        if variants:
            typed = [v for v in variants if v.get("type") != "null"]
            if _string_or_object(typed):
                # No structural schema says "a string or an object" (spec.resources.env values):
                # the API server keeps the value as written and the operator's validation, which
                # knows the union, refuses a wrong one naming its field.
                kept = {k: node[k] for k in ("description",) if k in node}
                return {**kept, "x-kubernetes-preserve-unknown-fields": True}
            if len(typed) != 1:
                raise ValueError(f"a union of {typed} has no structural schema")
            rest = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf")}
            if rest.get("default") is None:
                rest.pop("default", None)
            return self._node({**typed[0], **rest}, model_name=model_name)

        out: dict[str, Any] = {}
        if "const" in node:
            out["type"] = "string"
            out["enum"] = [node["const"]]
        elif "enum" in node:
            out["type"] = node.get("type", "string")
        else:
            out["type"] = node.get("type", "object")
        for key in _KEPT:
            if key in node and key not in out:
                out[key] = node[key]
        for bound, kubernetes_bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if bound in node:
                out[kubernetes_bound] = node[bound]
                out[bound] = True
        if node.get("uniqueItems"):
            out["x-kubernetes-list-type"] = "set"
        if self.with_defaults and "default" in node:
            out["default"] = node["default"]

        if out["type"] == "array":
            out["items"] = self._node(node.get("items", {}))
        elif out["type"] == "object":
            properties = node.get("properties")
            if properties is not None:
                model = self.models.get(model_name or "")
                factory = _factory_defaults(model) if model and self.with_defaults else {}
                out["properties"] = {}
                for key, value in properties.items():
                    prop = self._node(value)
                    if key in factory:
                        prop["default"] = factory[key]
                    out["properties"][key] = prop
                if node.get("required"):
                    out["required"] = list(node["required"])
            elif isinstance(node.get("additionalProperties"), dict) and node["additionalProperties"]:
                out["additionalProperties"] = self._node(node["additionalProperties"])
            else:
                out["x-kubernetes-preserve-unknown-fields"] = True
        return out


def spec_schema() -> dict[str, Any]:
    return _Translator(api.RunSpec, with_defaults=True).translate()


def status_schema() -> dict[str, Any]:
    return _Translator(api.RunStatus, with_defaults=False).translate()


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition object for LotteryTicketRun."""
    spec = spec_schema()
    spec["description"] = api.RunSpec.__doc__
    status = status_schema()
    status["description"] = api.RunStatus.__doc__
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": ["lth"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "description": "A search for a lottery ticket: IMP with rewinding.",
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `lth crd` from operator/lth/api.py. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100, allow_unicode=True)
