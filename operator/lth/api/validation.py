"""Checks a spec beyond what the CRD schema can say.

`lth validate` prints these problems and the operator turns them into a
Failed/InvalidSpec condition; both call `check_run` or `check_spec`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from lth.api import (
    CONTROL_BRANCHES,
    LOADER_PREFETCH_BATCHES,
    QUANTITY_PATTERN,
    LotteryTicketRun,
    RunSpec,
    TrainingApi,
)
from lth.api.naming import DNS1035_MAX, derived_names
from lth.api.pruning import stability_problems
from lth.api.wire import credential_fields, quantity_bytes, redact, url_problem
from lth.api.workload import default_crop_size, largest_training_crop, shm_need_bytes

DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec, at a field path such as `spec.training.epochs`; its message
    never shows a credential (it reaches conditions, events and logs)."""

    path: str
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", _printable(self.path))
        object.__setattr__(self, "message", _printable(redact(self.message)))

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _printable(text: str) -> str:
    """One line, whatever a user put in a key or value: control characters escaped."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _loc_to_path(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def problems_from_error(error: ValidationError, prefix: str) -> list[Problem]:
    """pydantic's errors, each at the field path a user wrote."""
    problems = []
    for item in error.errors():
        # A dict key's "[key]" and a union's tag ("", lth.api.wire.EnvValue) are no field.
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and ("[" in p or p == "")))
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append(Problem(_loc_to_path(prefix, loc), message))
    return problems


SubmittedSpec = tuple[RunSpec | None, list[Problem]]
"""A run's spec as submitted, parsed once per reconcile: the model, or the problems that keep
the document from being one."""


def parse_spec(raw: Mapping[str, Any] | None) -> SubmittedSpec:
    """The spec model, or the schema-level problems that keep it from being one."""
    if raw is None:
        return None, [Problem("spec", "is required")]
    try:
        return RunSpec.model_validate(raw), []
    except ValidationError as error:
        return None, problems_from_error(error, "spec")


def check_name(name: str, spec: RunSpec) -> list[Problem]:
    """The run's name must leave room for every name the cluster derives from it."""
    if not DNS1035_LABEL.match(name):
        return [
            Problem(
                "metadata.name",
                f"{name!r} must be a DNS-1035 label (lowercase letters, digits and '-', "
                "starting with a letter): child job names are built from it",
            )
        ]
    if spec.ticket is not None and spec.ticket.run == name:
        return [Problem("spec.ticket.run", f"{name!r} is this run: a run cannot transfer its own ticket")]
    longest = derived_names(name, spec)[-1]
    if len(longest) > DNS1035_MAX:
        allowed = len(name) - (len(longest) - DNS1035_MAX)
        return [
            Problem(
                "metadata.name",
                f"{name!r} is {len(name)} characters; at most {allowed} leave room for the "
                f"derived name {longest!r} within {DNS1035_MAX}",
            )
        ]
    return []


def check_spec(spec: RunSpec) -> list[Problem]:
    """Rules that relate fields to each other."""
    return (
        _check_schedule(spec)
        + _check_processes(spec)
        + _check_passthrough(spec)
        + _check_shm(spec)
        + _check_levels(spec)
        + _check_ticket(spec)
        + _check_export(spec)
        + _check_search(spec)
        + [Problem(path, message) for path, message in stability_problems(spec)]  # rewindTo auto
        + _check_data(spec)
        + _check_training_api(spec)
        + _check_credentials(spec)
    )


def _check_schedule(spec: RunSpec) -> list[Problem]:
    """The rewind point, milestones and warmup within a level's epochs."""
    problems: list[Problem] = []
    training, pruning = spec.training, spec.pruning
    amount, unit = pruning.rewind_point() if not pruning.auto_rewind else (0, "it")
    if unit == "ep" and amount >= training.epochs:
        problems.append(
            Problem(
                "spec.pruning.rewindTo",
                f"rewinds to epoch {amount:g}, but a level trains only {training.epochs} epochs",
            )
        )
    if training.schedule == "step" and training.milestones and training.milestones[-1] >= training.epochs:
        problems.append(
            Problem(
                "spec.training.milestones",
                f"milestone {training.milestones[-1]} is not before the last epoch ({training.epochs})",
            )
        )
    if training.warmup_epochs >= training.epochs:
        problems.append(
            Problem(
                "spec.training.warmupEpochs",
                f"{training.warmup_epochs} warmup epochs leave no training in {training.epochs}",
            )
        )
    return problems


def _check_processes(spec: RunSpec) -> list[Problem]:
    """The batch over the processes, and what only GPUs can do."""
    problems: list[Problem] = []
    training, resources = spec.training, spec.resources
    world = resources.world_size
    if training.batch_size % world:
        problems.append(
            Problem(
                "spec.training.batchSize",
                f"{training.batch_size} does not divide evenly over {world} processes "
                f"({resources.pods} pods x {resources.processes_per_pod})",
            )
        )
    if resources.gpus_per_pod == 0 and training.precision == "fp16":
        problems.append(Problem("spec.training.precision", "fp16 needs GPUs; use bf16 or fp32 on CPU"))
    if resources.gpus_per_pod == 0 and training.sync_batch_norm:
        problems.append(
            Problem("spec.training.syncBatchNorm", "needs GPUs (PyTorch's SyncBatchNorm runs on CUDA only)")
        )
    if resources.gpus_per_pod == 0 and training.gradient_compression != "none":
        problems.append(
            Problem(
                "spec.training.gradientCompression",
                f"{training.gradient_compression} needs GPUs (a DDP communication hook for NCCL)",
            )
        )

    return problems


def _check_levels(spec: RunSpec) -> list[Problem]:
    """The level budget against the target density and the control levels."""
    problems: list[Problem] = []
    pruning = spec.pruning
    budget = spec.level_budget
    target = pruning.stop.target_density
    if target is not None and spec.ticket is None and not pruning.searching:
        # A transfer run's start density is known only once its ticket is resolved.
        needed = pruning.levels_to_reach(target)
        if needed > budget:
            problems.append(
                Problem(
                    "spec.pruning.stop.targetDensity",
                    f"density {target} needs {needed} levels at fraction {pruning.fraction}, "
                    f"but spec.pruning.levels is {budget} "
                    f"(reaches {pruning.density(budget):.4f})",
                )
            )
    control_levels = pruning.controls.levels
    if control_levels:
        beyond = [level for level in control_levels if level > budget]
        if beyond:
            problems.append(
                Problem(
                    "spec.pruning.controls.levels",
                    f"levels {beyond} are beyond spec.pruning.levels ({budget})",
                )
            )
    return problems


def _check_data(spec: RunSpec) -> list[Problem]:
    """Each control branch once; the crop, the classes and the stored geometry."""
    problems: list[Problem] = []
    training, pruning = spec.training, spec.pruning
    if len(set(pruning.controls.branches)) != len(pruning.controls.branches):
        problems.append(
            Problem(
                "spec.pruning.controls.branches",
                f"each branch at most once (of {', '.join(CONTROL_BRANCHES)})",
            )
        )
    crop, dataset = training.crop_size, spec.dataset
    stored = dataset.crop_short_side if dataset.resize == "whole" else dataset.image_size
    if crop is not None and crop > stored:
        field = "spec.dataset.shortSide" if dataset.resize == "whole" else "spec.dataset.imageSize"
        problems.append(
            Problem("spec.training.cropSize", f"{crop} is larger than the images ({stored}, {field})")
        )
    if dataset.max_side is not None and dataset.resize != "whole":
        problems.append(Problem("spec.dataset.maxSide", "applies to resize: whole only"))
    if dataset.resize == "whole" and dataset.long_side_cap < dataset.crop_short_side:
        problems.append(
            Problem(
                "spec.dataset.maxSide",
                f"{dataset.long_side_cap} is smaller than shortSide {dataset.crop_short_side}",
            )
        )
    classes = spec.dataset.classes
    if classes is not None and len(set(classes)) != len(classes):
        problems.append(Problem("spec.dataset.classes", "lists a class twice"))
    if classes is not None and len(classes) < 2:
        problems.append(Problem("spec.dataset.classes", "needs at least 2 classes"))
    if spec.dataset.resize == "center-crop" and spec.dataset.crop_short_side < spec.dataset.image_size:
        problems.append(
            Problem(
                "spec.dataset.shortSide",
                f"{spec.dataset.crop_short_side} is smaller than imageSize {spec.dataset.image_size}",
            )
        )
    whole = dataset.resize == "whole"
    height, width = (dataset.crop_short_side, dataset.long_side_cap) if whole else (dataset.image_size,) * 2
    if dataset.max_image_pixels < height * width:
        problems.append(
            Problem(
                "spec.dataset.maxImagePixels",
                f"{dataset.max_image_pixels} is less than the {height}x{width} pixels of the largest stored "
                f"images (spec.dataset.{'shortSide, maxSide' if whole else 'imageSize'})",
            )
        )
    if spec.model.num_classes is not None and classes is not None and spec.model.num_classes != len(classes):
        problems.append(
            Problem(
                "spec.model.numClasses",
                f"is {spec.model.num_classes} but spec.dataset.classes lists {len(classes)}",
            )
        )
    return problems


def _check_shm(spec: RunSpec) -> list[Problem]:
    shm = _shm_problem(spec)
    return [] if shm is None else [shm]


def _shm_problem(spec: RunSpec) -> Problem | None:
    need = shm_need_bytes(spec)
    have = quantity_bytes(spec.resources.shm_size)
    if need <= have:
        return None
    training, resources = spec.training, spec.resources
    return Problem(
        "spec.resources.shmSize",
        f"{resources.shm_size} is less than the {need / 2**30:.1f}Gi of /dev/shm the data loaders "
        f"need: {resources.processes_per_pod} processes x {training.workers} workers x "
        f"{LOADER_PREFETCH_BATCHES} batches of {training.batch_size // max(resources.world_size, 1)} "
        f"images ({'x'.join(map(str, largest_training_crop(spec)))} px stored crops for training, "
        f"{default_crop_size(spec)} px for evaluation); raise shmSize "
        "or lower spec.training.workers",
    )


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESOURCE_NAME = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
RESERVED_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _check_passthrough(spec: RunSpec) -> list[Problem]:
    """spec.resources.env and extraResources: names Kubernetes takes, nothing torchrun sets."""
    problems = []
    for name in spec.resources.env:
        if not ENV_NAME.match(name):
            problems.append(Problem(f"spec.resources.env.{name}", "is not an environment variable name"))
        elif name in RESERVED_ENV or name.startswith("PET_"):
            problems.append(
                Problem(f"spec.resources.env.{name}", "is set by torchrun or the training operator")
            )
    for name, quantity in spec.resources.extra_resources.items():
        if not RESOURCE_NAME.match(name) or name in ("cpu", "memory", "nvidia.com/gpu"):
            problems.append(
                Problem(
                    f"spec.resources.extraResources.{name}",
                    "is not an extended resource name (cpu, memory and GPUs have fields of their own)",
                )
            )
        elif not re.fullmatch(QUANTITY_PATTERN, quantity):
            problems.append(
                Problem(f"spec.resources.extraResources.{name}", f"{quantity!r} is not a quantity")
            )
    return problems


def _check_training_api(spec: RunSpec) -> list[Problem]:
    """What a TrainJob cannot carry: Trainer v2.3's runtimePatches take no priorityClassName."""
    if spec.resources.training_api != "TrainJob" or not spec.resources.priority_class_name:
        return []
    why = "a TrainJob cannot set it (runtimePatches do not carry priorityClassName): give it in"
    return [
        Problem(
            "spec.resources.priorityClassName", f"{why} the runtime, or use a Kueue WorkloadPriorityClass"
        )
    ]


def _check_search(spec: RunSpec) -> list[Problem]:
    """spec.pruning.search: what the gradual and short-imp searches need, and options only they read."""
    pruning, search, path = spec.pruning, spec.pruning.search, "spec.pruning.search"
    if not pruning.searching:
        if search.densities is not None:
            return [
                Problem(
                    f"{path}.densities",
                    "applies to methods gradual and short-imp only (IMP prunes by spec.pruning.levels)",
                )
            ]
        return []
    problems = []
    method = search.method
    if spec.ticket is not None:
        problems.append(
            Problem(f"{path}.method", f"{method} searches a mask; a transfer run (spec.ticket) has one")
        )
    if pruning.rewind != "weights":
        problems.append(
            Problem(
                f"{path}.method",
                f"{method} trains its tickets from the rewind point: needs spec.pruning.rewind weights",
            )
        )
    if pruning.levels is not None and search.densities is not None:
        problems.append(
            Problem(
                "spec.pruning.levels",
                f"with search.method {method} the levels are 0 (dense), the search's and one per "
                "search.densities; give one of the two",
            )
        )
    if pruning.stop.target_density is not None:
        problems.append(
            Problem(
                "spec.pruning.stop.targetDensity", f"IMP only: the {method} search stops at search.densities"
            )
        )
    if search.epochs > spec.training.epochs:
        problems.append(
            Problem(
                f"{path}.epochs",
                f"{search.epochs} is more than the schedule's {spec.training.epochs} epochs "
                "(spec.training.epochs): the search trains its last epochs",
            )
        )
    return problems


def _check_ticket(spec: RunSpec) -> list[Problem]:
    ticket = spec.ticket
    if ticket is None:
        return []
    problems = []
    if sum(source is not None for source in (ticket.run, ticket.path, ticket.url)) != 1:
        problems.append(
            Problem("spec.ticket", "name exactly one source: run (a LotteryTicketRun), path or url")
        )
    if ticket.run is None and ticket.level is not None:
        problems.append(
            Problem("spec.ticket.level", "applies to spec.ticket.run; an exported ticket holds one level")
        )
    if ticket.path is not None and "://" in ticket.path:
        problems.append(
            Problem(
                "spec.ticket.path",
                f"{ticket.path!r} is a URL: give http(s):// and s3:// URLs as spec.ticket.url",
            )
        )
    if ticket.url is not None and ("?" in ticket.url or "#" in ticket.url):
        problems.append(
            Problem("spec.ticket.url", "a directory URL has no query or fragment (its files are URL/<name>)")
        )
    if ticket.url is not None and ticket.url.startswith("s3://"):
        problem = url_problem(ticket.url)
        if problem is not None:
            problems.append(Problem("spec.ticket.url", f"{ticket.url!r}: {problem}"))
    if ticket.secret_name is not None and not (ticket.url or "").startswith("s3://"):
        problems.append(Problem("spec.ticket.secretName", "holds credentials for an s3:// spec.ticket.url"))
    if ticket.prune_head and ticket.head == "keep":
        problems.append(
            Problem("spec.ticket.pruneHead", "applies to a re-initialised head; a kept head keeps its mask")
        )
    if len(set(ticket.controls)) != len(ticket.controls):
        problems.append(Problem("spec.ticket.controls", "each control at most once"))
    return problems


def _check_export(spec: RunSpec) -> list[Problem]:
    export = spec.export
    problems = []
    if export.url is not None:
        problem = url_problem(export.url)
        if problem is not None:
            problems.append(Problem("spec.export.url", f"{export.url!r}: {problem}"))
    for field, value in (("secretName", export.secret_name), ("endpointUrl", export.endpoint_url)):
        if value is not None and export.url is None:
            problems.append(Problem(f"spec.export.{field}", "applies to an upload: set spec.export.url"))
    return problems


def _check_credentials(spec: RunSpec) -> list[Problem]:
    """Credentials by reference only (`lth.api.wire.credential_fields`)."""
    return [Problem(path, message) for path, message in credential_fields(spec.to_wire(), "spec")]


def check_run(
    doc: Mapping[str, Any], training_api: TrainingApi | None = None
) -> tuple[LotteryTicketRun | None, list[Problem]]:
    """A whole LotteryTicketRun document: the model and every problem (for `training_api`, the
    cluster's default, where the spec names none)."""
    if not isinstance(doc, Mapping):
        return None, [Problem("", "is not a mapping")]
    try:
        run = LotteryTicketRun.model_validate(doc)
    except ValidationError as error:
        return None, problems_from_error(error, "")
    spec, res = run.spec, run.spec.resources
    if res.training_api is None and training_api is not None:
        spec = spec.model_copy(update={"resources": res.model_copy(update={"training_api": training_api})})
    problems = check_name(run.metadata.name, spec) + check_spec(spec)
    return run, problems
