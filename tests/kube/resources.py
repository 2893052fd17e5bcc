"""The kinds an emulated cluster serves: built-ins the operator needs, and CRDs read from YAML."""

from __future__ import annotations

import base64
import datetime
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
OUR_CRDS = ROOT / "crds"


def _shared_dir() -> Path:
    """shared/ beside the checkout (as CI lays it out) or beside the main checkout of a git worktree."""
    if "LTH_SHARED" in os.environ:
        return Path(os.environ["LTH_SHARED"])
    candidates = [ROOT.parent / "shared"]
    if (ROOT / ".git").is_file():  # a worktree: "gitdir: <main checkout>/.git/worktrees/<name>"
        gitdir = Path((ROOT / ".git").read_text().split("gitdir:", 1)[1].strip())
        candidates.append(gitdir.parents[2].parent / "shared")
    return next((path for path in candidates if path.exists()), candidates[0])


UPSTREAM_CRDS = _shared_dir() / "upstream-crds"
UPSTREAM_CRD_FILES = (
    "sparkoperator.k8s.io_sparkapplications.yaml",
    "kubeflow.org_pytorchjobs.yaml",
    "trainer.kubeflow.org_trainjobs.yaml",
    "trainer.kubeflow.org_clustertrainingruntimes.yaml",
    "trainer.kubeflow.org_trainingruntimes.yaml",
    "jobset.x-k8s.io_jobsets.yaml",
)

AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


@dataclass(frozen=True)
class Kind:
    """One served resource: where it lives in the URL space and how the server treats it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    has_status: bool = True  # the status subresource: writes to /status change only status
    schema: dict[str, Any] | None = None  # the CRD's openAPIV3Schema; None: anything goes
    printer_columns: tuple[dict[str, Any], ...] = (AGE,)
    """As a CRD's additionalPrinterColumns; a built-in's column may compute its cell (`cell`)"""
    initial_status: dict[str, Any] = field(default_factory=dict)
    prepare_for_create: Callable[[dict[str, Any]], None] | None = None
    """The registry strategy's defaulting on create (after uid and name are set), for built-ins"""
    orphans_by_default: bool = False
    """`DefaultGarbageCollectionPolicy` is OrphanDependents: a DELETE without propagationPolicy orphans"""
    subresources: tuple[str, ...] = ()
    """Served subresources besides status (`log` for pods)"""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """`lotteryticketruns.lth.dev`, as the real server names a kind in its messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def is_custom(self) -> bool:
        return self.schema is not None


LABEL_PREFIX = "batch.kubernetes.io/"
JOB_NAME_LABELS = ("job-name", LABEL_PREFIX + "job-name")
CONTROLLER_UID_LABELS = ("controller-uid", LABEL_PREFIX + "controller-uid")


def prepare_job(job: dict[str, Any]) -> None:
    """What the API server does to a batch/v1 Job on create (Kubernetes 1.32).

    `SetDefaults_Job` (pkg/apis/batch/v1/defaults.go): completions and parallelism 1 when
    both are unset, parallelism 1, backoffLimit 6, the Job's labels from the template's
    when it has none, completionMode NonIndexed, suspend false, podReplacementPolicy
    TerminatingOrFailed (Failed with a podFailurePolicy; JobPodReplacementPolicy is beta,
    on), manualSelector false. Then `jobStrategy.PrepareForCreate` →
    `generateSelectorIfNeeded` → `generateSelector` (pkg/registry/batch/job/strategy.go):
    the template gets `job-name`, `batch.kubernetes.io/job-name`, `controller-uid` and
    `batch.kubernetes.io/controller-uid` labels, and the selector matches
    `batch.kubernetes.io/controller-uid`. The pod template's own defaults are not applied
    (nor are a pod's: the emulator has no schema for built-ins).
    """
    spec = job.setdefault("spec", {})
    template = spec.setdefault("template", {})
    template_meta = template.setdefault("metadata", {})
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = 2**31 - 1 if spec.get("backoffLimitPerIndex") is not None else 6
    if template_meta.get("labels") and not job["metadata"].get("labels"):
        job["metadata"]["labels"] = dict(template_meta["labels"])
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault(
        "podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed"
    )
    spec.setdefault("manualSelector", False)
    if not spec["manualSelector"]:
        labels = template_meta.setdefault("labels", {})
        for key in JOB_NAME_LABELS:
            labels.setdefault(key, job["metadata"]["name"])
        for key in CONTROLLER_UID_LABELS:
            labels.setdefault(key, job["metadata"]["uid"])
        selector = spec.setdefault("selector", {})
        selector.setdefault("matchLabels", {}).setdefault(CONTROLLER_UID_LABELS[1], job["metadata"]["uid"])


def _true(obj: dict[str, Any], condition_type: str) -> bool:
    return any(
        c.get("type") == condition_type and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def _job_status(job: dict[str, Any], now: datetime.datetime) -> str:
    """`printJob` (pkg/printers/internalversion/printers.go): the first of these that holds."""
    if _true(job, "Complete"):
        return "Complete"
    if _true(job, "Failed"):
        return "Failed"
    if job["metadata"].get("deletionTimestamp"):
        return "Terminating"
    if _true(job, "Suspended"):
        return "Suspended"
    if _true(job, "FailureTarget"):
        return "FailureTarget"
    return "Running"  # SuccessCriteriaMet too: 1.32's printer has no case for it


def _job_completions(job: dict[str, Any], now: datetime.datetime) -> str:
    """`printJob`: succeeded/completions, or `n/1 of <parallelism>` without completions."""
    spec, succeeded = job.get("spec") or {}, (job.get("status") or {}).get("succeeded", 0)
    if spec.get("completions") is not None:
        return f"{succeeded}/{spec['completions']}"
    if (spec.get("parallelism") or 0) > 1:
        return f"{succeeded}/1 of {spec['parallelism']}"
    return f"{succeeded}/1"


def _job_duration(job: dict[str, Any], now: datetime.datetime) -> str:
    """`printJob`: completionTime - startTime, or the time since startTime; blank before it."""
    from tests.kube import printing  # printing imports this module

    status = job.get("status") or {}
    if not status.get("startTime"):
        return ""
    if not status.get("completionTime"):
        return printing.human_age(status["startTime"], now)
    completed = datetime.datetime.fromisoformat(status["completionTime"].replace("Z", "+00:00"))
    return printing.human_age(status["startTime"], completed)


JOB_COLUMNS = (
    {"name": "Status", "type": "string", "description": "Status of the job.", "cell": _job_status},
    {
        "name": "Completions",
        "type": "string",
        "description": "The completion status of the job.",
        "cell": _job_completions,
    },
    {
        "name": "Duration",
        "type": "string",
        "description": "Time required to complete the job.",
        "cell": _job_duration,
    },
    AGE,
    {
        "name": "Containers",
        "type": "string",
        "priority": 1,
        "description": "Names of each container in the template.",
        "cell": lambda job, now: ",".join(c["name"] for c in _template_containers(job)),
    },
    {
        "name": "Images",
        "type": "string",
        "priority": 1,
        "description": "Images referenced by each container in the template.",
        "cell": lambda job, now: ",".join(c.get("image", "") for c in _template_containers(job)),
    },
    {
        "name": "Selector",
        "type": "string",
        "priority": 1,
        "description": "A label query over pods that should match the pod count.",
        "cell": lambda job, now: ",".join(
            f"{k}={v}"
            for k, v in sorted(
                (((job.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}).items()
            )
        ),
    },
)


def _template_containers(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list((((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [])


def prepare_pod(pod: dict[str, Any]) -> None:
    """`applySchedulingGatedCondition` (pkg/registry/core/pod/strategy.go, Kubernetes 1.32): a pod
    created with scheduling gates is PodScheduled False, SchedulingGated, until they are gone."""
    if (pod.get("spec") or {}).get("schedulingGates"):
        pod.setdefault("status", {})["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "SchedulingGated",
                "message": "Scheduling is blocked due to non-empty scheduling gates",
            }
        ]


def prepare_secret(secret: dict[str, Any]) -> None:
    """What the API server does to a core v1 Secret on create (Kubernetes 1.32).

    `Convert_v1_Secret_To_core_Secret` (pkg/apis/core/v1/conversion.go): `stringData`
    overwrites `data` key by key (the stored Secret has only base64 `data`: stringData is
    write-only); `SetDefaults_Secret` (pkg/apis/core/v1/defaults.go): type Opaque when unset.
    """
    string_data = secret.pop("stringData", None) or {}
    if string_data:
        data = secret.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
    if not secret.get("type"):
        secret["type"] = "Opaque"


SECRET_COLUMNS = (
    # printSecret (pkg/printers/internalversion/printers.go): Type, len(Data), Age; the server
    # declares Data a "string" column though its cell is an int64.
    {
        "name": "Type",
        "type": "string",
        "description": "Used to facilitate programmatic handling of secret data.",
        "cell": lambda obj, now: obj.get("type", ""),
    },
    {
        "name": "Data",
        "type": "string",
        "description": "Data contains the secret data.",
        "cell": lambda obj, now: len(obj.get("data") or {}),
    },
    AGE,
)

CONFIG_MAP_COLUMNS = (
    # printConfigMap: len(Data) + len(BinaryData), Age.
    {
        "name": "Data",
        "type": "string",
        "description": "Data contains the configuration data.",
        "cell": lambda obj, now: len(obj.get("data") or {}) + len(obj.get("binaryData") or {}),
    },
    AGE,
)

BUILT_INS = (
    Kind(
        "",
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        short_names=("ns",),
        printer_columns=({"name": "Status", "type": "string", "jsonPath": ".status.phase"}, AGE),
        initial_status={"phase": "Active"},
    ),
    Kind(
        "",
        "v1",
        "pods",
        "Pod",
        short_names=("po",),
        categories=("all",),
        printer_columns=({"name": "Status", "type": "string", "jsonPath": ".status.phase"}, AGE),
        initial_status={"phase": "Pending"},
        subresources=("log",),
        prepare_for_create=prepare_pod,
    ),
    Kind(
        "",
        "v1",
        "services",
        "Service",
        short_names=("svc",),
        categories=("all",),
        printer_columns=({"name": "Cluster-IP", "type": "string", "jsonPath": ".spec.clusterIP"}, AGE),
    ),
    Kind(
        "",
        "v1",
        "secrets",
        "Secret",
        has_status=False,
        printer_columns=SECRET_COLUMNS,
        prepare_for_create=prepare_secret,
    ),
    Kind(
        "",
        "v1",
        "configmaps",
        "ConfigMap",
        short_names=("cm",),
        has_status=False,
        printer_columns=CONFIG_MAP_COLUMNS,
    ),
    Kind("", "v1", "resourcequotas", "ResourceQuota", short_names=("quota",)),
    Kind("", "v1", "events", "Event", short_names=("ev",), has_status=False),
    Kind("events.k8s.io", "v1", "events", "Event", short_names=("ev",), has_status=False),
    Kind("coordination.k8s.io", "v1", "leases", "Lease", has_status=False),
    Kind(
        "batch",
        "v1",
        "jobs",
        "Job",
        categories=("all",),
        printer_columns=JOB_COLUMNS,
        prepare_for_create=prepare_job,
        orphans_by_default=True,  # jobStrategy.DefaultGarbageCollectionPolicy, for batch/v1
    ),
)


def kinds_from_crd(crd: dict[str, Any]) -> list[Kind]:
    """Every served version of a CustomResourceDefinition, as a Kind."""
    spec = crd["spec"]
    names = spec["names"]
    return [
        Kind(
            group=spec["group"],
            version=version["name"],
            plural=names["plural"],
            kind=names["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            singular=names.get("singular", names["kind"].lower()),
            short_names=tuple(names.get("shortNames", ())),
            categories=tuple(names.get("categories", ())),
            has_status="status" in (version.get("subresources") or {}),
            schema=version["schema"]["openAPIV3Schema"],
            printer_columns=tuple(version.get("additionalPrinterColumns") or (AGE,)),
        )
        for version in spec["versions"]
        if version.get("served", True)
    ]


@functools.cache
def _kinds_from_file(path: Path) -> tuple[Kind, ...]:
    with path.open() as stream:
        documents = list(yaml.load_all(stream, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    return tuple(
        kind
        for doc in documents
        if doc and doc.get("kind") == "CustomResourceDefinition"
        for kind in kinds_from_crd(doc)
    )


def kinds_from_file(path: Path) -> list[Kind]:
    """The kinds in a CRD YAML file (parsed once per process: the upstream files are large)."""
    return list(_kinds_from_file(Path(path).resolve()))


def project_kinds() -> list[Kind]:
    """What the operator talks to: built-ins, our CRDs, and the upstream Spark and training CRDs."""
    files = sorted(OUR_CRDS.glob("*.yaml")) + [UPSTREAM_CRDS / name for name in UPSTREAM_CRD_FILES]
    missing = [str(path) for path in files if not path.exists()]
    if missing:
        raise FileNotFoundError(
            f"CRD files not found: {', '.join(missing)} "
            "(shared/ lies beside the checkout; or set LTH_SHARED to the shared/ folder)"
        )
    return [*BUILT_INS, *(kind for path in files for kind in kinds_from_file(path))]
