"""The kinds an emulated cluster serves: built-ins the operator needs, and CRDs read from YAML."""

from __future__ import annotations

import functools
import os
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
UPSTREAM_CRD_FILES = ("sparkoperator.k8s.io_sparkapplications.yaml", "kubeflow.org_pytorchjobs.yaml")

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
    initial_status: dict[str, Any] = field(default_factory=dict)

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
    Kind("", "v1", "events", "Event", short_names=("ev",), has_status=False),
    Kind("events.k8s.io", "v1", "events", "Event", short_names=("ev",), has_status=False),
    Kind("coordination.k8s.io", "v1", "leases", "Lease", has_status=False),
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
