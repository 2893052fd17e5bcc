"""A stand-in for Pod Security admission (k8s.io/pod-security-admission v0.32.0, Kubernetes 1.32).

A pod created in a namespace labelled `pod-security.kubernetes.io/enforce: baseline|restricted`
(with `-version`, default `latest`) is refused when a check of that level fails
(`Admission.EvaluatePod`, admission/admission.go): 403 Forbidden,
`pods "<name>" is forbidden: violates PodSecurity "<level>:<version>": <reason> (<detail>), ...`
(`forbiddenResponse`, admission/response.go, `apierrors.NewForbidden`; the reasons and details
joined by `AggregateCheckResult.ForbiddenDetail`, policy/checks.go). The checks run in the
registry's order (policy/registry.go `populate`): the baseline check IDs sorted, then the
restricted ones sorted, a restricted check replacing the baseline check it overrides
(capabilities, hostPath volumes, seccomp). Every check visits init containers first, then
containers (`visitContainers`, policy/visitor.go). Each function below is upstream's for its
check ID (policy/check_<ID>.go at its latest version), with its texts.

Not modelled, because neither our pods nor the ones the controllers inject set these fields:
appArmorProfile, procMount, seLinuxOptions, sysctls, windowsHostProcess; user-namespace pods
(`relaxPolicyForUserNamespacePod`); the AdmissionConfiguration's exemptions and cluster-wide
defaults; audit and warn modes; workload resources (only warned about upstream, never refused).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from tests.kube import emulator
from tests.kube.resources import Kind

ENFORCE = "pod-security.kubernetes.io/enforce"
ENFORCE_VERSION = "pod-security.kubernetes.io/enforce-version"
LEVELS = ("privileged", "baseline", "restricted")
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
"""`capabilities_allowed_1_0` (check_capabilities_baseline.go)."""
RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
"""The volume types restricted allows (check_restrictedVolumes.go)."""

Pod = dict[str, Any]
Result = tuple[str, str] | None
"""(forbidden reason, forbidden detail) of a failed check; None when it passes."""


def _containers(spec: Pod) -> Iterator[Pod]:
    """`visitContainers`: init containers, containers, ephemeral containers."""
    for field in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(field) or []


def _quote(items: list[str]) -> str:
    """`joinQuote`."""
    return '"' + '", "'.join(items) + '"' if items else ""


def _plural(singular: str, plural: str, count: int) -> str:
    return singular if count == 1 else plural


def _named(names: list[str], singular: str = "container", plural: str = "containers") -> str:
    """`container "a"` or `containers "a", "b"`, as the checks name what fails."""
    return f"{_plural(singular, plural, len(names))} {_quote(names)}"


def _security(container: Pod) -> Pod:
    return container.get("securityContext") or {}


def host_namespaces(spec: Pod) -> Result:
    found = [f"{name}=true" for name in ("hostNetwork", "hostPID", "hostIPC") if spec.get(name)]
    return ("host namespaces", ", ".join(found)) if found else None


def host_path_volumes(spec: Pod) -> Result:
    volumes = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
    if not volumes:
        return None
    return "hostPath volumes", f"{_plural('volume', 'volumes', len(volumes))} {_quote(volumes)}"


def host_ports(spec: Pod) -> Result:
    bad, ports = [], set()
    for container in _containers(spec):
        used = {int(p["hostPort"]) for p in container.get("ports") or [] if p.get("hostPort")}
        if used:
            bad.append(container["name"])
            ports |= used
    if not bad:
        return None
    listed = ", ".join(sorted(str(port) for port in ports))
    return "hostPort", (
        f"{_named(bad)} {_plural('uses', 'use', len(bad))} "
        f"{_plural('hostPort', 'hostPorts', len(ports))} {listed}"
    )


def privileged(spec: Pod) -> Result:
    bad = [c["name"] for c in _containers(spec) if _security(c).get("privileged") is True]
    if not bad:
        return None
    return "privileged", (f"{_named(bad)} must not set securityContext.privileged=true")


def capabilities_baseline(spec: Pod) -> Result:
    bad, added = [], set()
    for container in _containers(spec):
        capabilities = _security(container).get("capabilities")
        if capabilities is None:
            continue
        extra = {c for c in capabilities.get("add") or [] if c not in BASELINE_CAPABILITIES}
        if extra:
            bad.append(container["name"])
            added |= extra
    if not bad:
        return None
    return "non-default capabilities", (
        f"{_named(bad)} must not include {_quote(sorted(added))} in securityContext.capabilities.add"
    )


def _valid_seccomp(profile: Pod) -> bool:
    return profile.get("type") in ("RuntimeDefault", "Localhost")


def _seccomp_setters(spec: Pod) -> tuple[list[str], set[str], list[str]]:
    """Who sets a bad seccompProfile.type (and which), and the containers that set none."""
    setters, values, unset = [], set(), []
    pod_profile = (spec.get("securityContext") or {}).get("seccompProfile")
    if pod_profile is not None and not _valid_seccomp(pod_profile):
        setters.append("pod")
        values.add(str(pod_profile.get("type")))
    bad = []
    for container in _containers(spec):
        profile = _security(container).get("seccompProfile")
        if profile is None:
            unset.append(container["name"])
        elif not _valid_seccomp(profile):
            bad.append(container["name"])
            values.add(str(profile.get("type")))
    if bad:
        setters.append(f"{_named(bad)}")
    return setters, values, unset


def _bad_seccomp(setters: list[str], values: set[str]) -> Result:
    detail = f"{' and '.join(setters)} must not set securityContext.seccompProfile.type to "
    return "seccompProfile", detail + _quote(sorted(values))


def seccomp_baseline(spec: Pod) -> Result:
    setters, values, _ = _seccomp_setters(spec)
    return _bad_seccomp(setters, values) if setters else None


def allow_privilege_escalation(spec: Pod) -> Result:
    bad = [c["name"] for c in _containers(spec) if _security(c).get("allowPrivilegeEscalation") is not False]
    if not bad:
        return None
    return "allowPrivilegeEscalation != false", (
        f"{_named(bad)} must set securityContext.allowPrivilegeEscalation=false"
    )


def capabilities_restricted(spec: Pod) -> Result:
    missing_drop, adding, forbidden = [], [], set()
    for container in _containers(spec):
        capabilities = _security(container).get("capabilities")
        if capabilities is None:
            missing_drop.append(container["name"])
            continue
        if "ALL" not in (capabilities.get("drop") or []):
            missing_drop.append(container["name"])
        extra = {c for c in capabilities.get("add") or [] if c != "NET_BIND_SERVICE"}
        if extra:
            adding.append(container["name"])
            forbidden |= extra
    details = []
    if missing_drop:
        details.append(f'{_named(missing_drop)} must set securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(
            f"{_named(adding)} must not include "
            f"{_quote(sorted(forbidden))} in securityContext.capabilities.add"
        )
    return ("unrestricted capabilities", "; ".join(details)) if details else None


def restricted_volumes(spec: Pod) -> Result:
    bad, types = [], set()
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if kinds & RESTRICTED_VOLUMES:
            continue
        bad.append(volume["name"])
        types |= kinds or {"unknown"}
    if not bad:
        return None
    return "restricted volume types", (
        f"{_plural('volume', 'volumes', len(bad))} {_quote(bad)} {_plural('uses', 'use', len(bad))} "
        f"{_plural('restricted volume type', 'restricted volume types', len(types))} {_quote(sorted(types))}"
    )


def run_as_non_root(spec: Pod) -> Result:
    setters, implicit, explicit = [], [], []
    pod_value = (spec.get("securityContext") or {}).get("runAsNonRoot")
    if pod_value is False:
        setters.append("pod")
    for container in _containers(spec):
        value = _security(container).get("runAsNonRoot")
        if value is False:
            explicit.append(container["name"])
        elif value is None and pod_value is not True:
            implicit.append(container["name"])
    if explicit:
        setters.append(f"{_named(explicit)}")
    if setters:
        return (
            "runAsNonRoot != true",
            f"{' and '.join(setters)} must not set securityContext.runAsNonRoot=false",
        )
    if implicit:
        return "runAsNonRoot != true", (
            f"pod or {_named(implicit)} must set securityContext.runAsNonRoot=true"
        )
    return None


def run_as_user(spec: Pod) -> Result:
    setters = ["pod"] if (spec.get("securityContext") or {}).get("runAsUser") == 0 else []
    bad = [c["name"] for c in _containers(spec) if _security(c).get("runAsUser") == 0]
    if bad:
        setters.append(f"{_named(bad)}")
    return ("runAsUser=0", f"{' and '.join(setters)} must not set runAsUser=0") if setters else None


def seccomp_restricted(spec: Pod) -> Result:
    setters, values, unset = _seccomp_setters(spec)
    if setters:
        return _bad_seccomp(setters, values)
    pod_set = (spec.get("securityContext") or {}).get("seccompProfile") is not None
    if unset and not pod_set:
        return "seccompProfile", (
            f"pod or {_named(unset)} must set "
            'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"'
        )
    return None


Check = Callable[[Pod], Result]
BASELINE: dict[str, Check] = {
    "capabilities_baseline": capabilities_baseline,
    "hostNamespaces": host_namespaces,
    "hostPathVolumes": host_path_volumes,
    "hostPorts": host_ports,
    "privileged": privileged,
    "seccompProfile_baseline": seccomp_baseline,
}
RESTRICTED: dict[str, Check] = {
    "allowPrivilegeEscalation": allow_privilege_escalation,
    "capabilities_restricted": capabilities_restricted,
    "restrictedVolumes": restricted_volumes,
    "runAsNonRoot": run_as_non_root,
    "runAsUser": run_as_user,
    "seccompProfile_restricted": seccomp_restricted,
}
OVERRIDES = {
    "capabilities_restricted": "capabilities_baseline",
    "restrictedVolumes": "hostPathVolumes",
    "seccompProfile_restricted": "seccompProfile_baseline",
}


def checks(level: str) -> list[Check]:
    """The checks of a level in the registry's order."""
    if level == "privileged":
        return []
    baseline = dict(sorted(BASELINE.items()))
    if level == "baseline":
        return list(baseline.values())
    overridden = set(OVERRIDES.values())
    kept = [check for name, check in baseline.items() if name not in overridden]
    return kept + [check for _, check in sorted(RESTRICTED.items())]


def violations(level: str, spec: Pod) -> list[tuple[str, str]]:
    """(reason, detail) of every check of `level` the pod spec fails."""
    return [result for check in checks(level) if (result := check(spec)) is not None]


def admit(api: emulator.ApiServer, kind: Kind, obj: Pod) -> None:
    """The validating admission of a pod create in a namespace that enforces a level."""
    if (kind.group, kind.plural) != ("", "pods"):
        return
    namespace = obj["metadata"].get("namespace")
    stored = api.objects.get(("", "v1", "namespaces", None, namespace or ""))
    labels = ((stored or {}).get("metadata") or {}).get("labels") or {}
    level = labels.get(ENFORCE, "privileged")
    if level not in LEVELS or level == "privileged":
        return
    found = violations(level, obj.get("spec") or {})
    if not found:
        return
    version = labels.get(ENFORCE_VERSION, "latest")
    detail = ", ".join(f"{reason} ({text})" if text else reason for reason, text in found)
    name = obj["metadata"]["name"]
    raise emulator.refused(
        403,
        "Forbidden",
        f'pods "{name}" is forbidden: violates PodSecurity "{level}:{version}": {detail}',
        name=name,
        kind="pods",
    )
