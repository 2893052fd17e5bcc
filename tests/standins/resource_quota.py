"""A stand-in for ResourceQuota admission (k8s.io/apiserver, Kubernetes 1.32).

`quotaEvaluator.checkRequest` (staging/src/k8s.io/apiserver/pkg/admission/plugin/resourcequota/
controller.go): for a create in a namespace with ResourceQuotas, each quota's tracked
resources (`spec.hard`) get the object's usage added to what the namespace uses now; one over
its limit refuses the create with 403 Forbidden,
`<resource> "<name>" is forbidden: exceeded quota: <quota>, requested: <r>, used: <u>, limited: <l>`
(`admission.NewForbidden`), each list `name=quantity` sorted and joined by commas (`prettyPrint`).
Usage, as the evaluators count it: `count/<plural>[.<group>]` for any object
(generic `ObjectCountEvaluator`); for pods (pkg/quota/v1/evaluator/core/pods.go) `pods`,
`requests.cpu` (or `cpu`), `requests.memory` (or `memory`), `limits.cpu`, `limits.memory` and
`requests.<extended resource>`, summed over the containers (a limit stands for a missing request,
as defaulting sets it); pods that have ended (Succeeded, Failed) use nothing. Usage is computed
from the stored objects at each admission (the real one reads `status.used`, which the quota
controller keeps). Not modelled: scopes, init containers' maximum, pod overhead, `must specify`.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from tests.kube import emulator
from tests.kube.resources import Kind

SUFFIXES = {
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
}
SUFFIXES |= {"Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40)}


def quantity(text: str | int) -> Fraction:
    value = str(text)
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if suffix and value.endswith(suffix):
            return Fraction(value[: -len(suffix)]) * SUFFIXES[suffix]
    return Fraction(value)


def formatted(amount: Fraction) -> str:
    """A quantity as `Quantity.String` prints it, for what quotas here count."""
    if amount.denominator == 1:
        whole = int(amount)
        for suffix in ("Ti", "Gi", "Mi", "Ki"):
            if whole >= SUFFIXES[suffix] and whole % SUFFIXES[suffix] == 0:
                return f"{whole // int(SUFFIXES[suffix])}{suffix}"
        return str(whole)
    return f"{int(amount * 1000)}m"


def pod_usage(pod: dict[str, Any]) -> dict[str, Fraction]:
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return {}
    usage: dict[str, Fraction] = {"pods": Fraction(1), "count/pods": Fraction(1)}
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        requests = {**limits, **(resources.get("requests") or {})}
        for name, value in requests.items():
            usage[f"requests.{name}"] = usage.get(f"requests.{name}", Fraction(0)) + quantity(value)
        for name, value in limits.items():
            usage[f"limits.{name}"] = usage.get(f"limits.{name}", Fraction(0)) + quantity(value)
    for short in ("cpu", "memory"):
        if f"requests.{short}" in usage:
            usage[short] = usage[f"requests.{short}"]
    return usage


def usage_of(kind: Kind, obj: dict[str, Any]) -> dict[str, Fraction]:
    count = f"count/{kind.plural}" + (f".{kind.group}" if kind.group else "")
    if (kind.group, kind.plural) == ("", "pods"):
        return pod_usage(obj)
    return {count: Fraction(1)}


def _pretty(values: dict[str, Fraction]) -> str:
    return ",".join(f"{name}={formatted(values[name])}" for name in sorted(values))


def admit(api: emulator.ApiServer, kind: Kind, obj: dict[str, Any]) -> None:
    """The validating admission of a create in a namespace with ResourceQuotas."""
    namespace = obj["metadata"].get("namespace")
    quotas = [
        quota
        for key, quota in sorted(api.objects.items())
        if key[:3] == ("", "v1", "resourcequotas") and key[3] == namespace
    ]
    if not quotas:
        return
    requested = usage_of(kind, obj)
    for quota in quotas:
        hard = {name: quantity(value) for name, value in (quota.get("spec") or {}).get("hard", {}).items()}
        asked = {name: amount for name, amount in requested.items() if name in hard and amount}
        if not asked:
            continue
        used = {name: Fraction(0) for name in asked}
        for key, other in api.objects.items():
            if key[3] != namespace or key[:3] == ("", "v1", "resourcequotas"):
                continue
            other_kind = api.kinds.get(key[:3])
            if other_kind is None:
                continue
            for name, amount in usage_of(other_kind, other).items():
                if name in used:
                    used[name] += amount
        exceeded = [name for name in asked if used[name] + asked[name] > hard[name]]
        if exceeded:
            resource = kind.plural + (f".{kind.group}" if kind.group else "")
            name = obj["metadata"]["name"]
            raise emulator.refused(
                403,
                "Forbidden",
                f'{resource} "{name}" is forbidden: exceeded quota: {quota["metadata"]["name"]}, '
                f"requested: {_pretty({n: asked[n] for n in exceeded})}, "
                f"used: {_pretty({n: used[n] for n in exceeded})}, "
                f"limited: {_pretty({n: hard[n] for n in exceeded})}",
                name=name,
                kind=kind.plural,
            )
