"""Cluster-wide defaults for a run's children, set once by whoever installs the operator, and
what a run may name.

The chart's `workloads` values reach the operator as one JSON document in
`LTH_WORKLOAD_DEFAULTS`; a run's spec overrides each of them (an image, a node
selector, the uid), so a `run.yaml` need not repeat what every run on the cluster
shares. `allowedImages` and `allowedSecrets` bound what a spec may name instead: whoever
may create a LotteryTicketRun runs the images it names, with the Secrets it names
(SECURITY.md). Imports only pydantic, like `lth.api`.
"""

from __future__ import annotations

import json
import os
from fnmatch import fnmatchcase
from typing import Literal

from pydantic import Field, ValidationError

from lth.api import ApiModel, RunSpec, Toleration, TrainingApi
from lth.api.validation import Problem, SubmittedSpec

ENV_VAR = "LTH_WORKLOAD_DEFAULTS"
TRAINER_IMAGE = "ghcr.io/lth-dev/lth-trainer:0.1.0"
TRAINING_RUNTIME = "lth-torch"
"""The ClusterTrainingRuntime the chart ships for TrainJobs (charts/lth-operator, trainingRuntime)."""
SPARK_IMAGE = "ghcr.io/lth-dev/lth-spark:0.1.0"
WORKLOAD_UID = 10001
"""The user the project's trainer and Spark images declare (images/*/Dockerfile): pods run
as it unless told otherwise, so a Spark pod without the Spark operator's webhook (which
alone applies a securityContext to Spark pods) writes as the same user as the trainers."""


class WorkloadDefaults(ApiModel):
    """What a run's pods get where its spec says nothing (chart values `workloads`)."""

    trainer_image: str = Field(TRAINER_IMAGE, min_length=1, description="Trainer image.")
    spark_image: str = Field(SPARK_IMAGE, min_length=1, description="Spark image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Secrets (in each run's namespace) to pull the images with."
    )
    gpu_node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node selector of GPU training pods, unless the spec has one."
    )
    gpu_tolerations: list[Toleration] = Field(
        default_factory=list, description="Tolerations of GPU training pods, unless the spec has some."
    )
    run_as_user: int = Field(WORKLOAD_UID, ge=1, description="uid of every pod that writes the volume.")
    run_as_group: int = Field(WORKLOAD_UID, ge=0, description="gid of every pod that writes the volume.")
    training_api: TrainingApi = Field(
        "PyTorchJob",
        description="What trains each level of a run whose spec.resources.trainingApi is unset.",
    )
    training_runtime: str = Field(
        TRAINING_RUNTIME,
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        description="The ClusterTrainingRuntime every TrainJob names (spec.runtimeRef).",
    )
    spark_pod_templates: bool = Field(
        True,
        description=(
            "Give the Spark driver and executors their securityContext through pod templates "
            "(spec.driver.template and spec.executor.template, spark-operator >= v2.1.0), so they pass "
            "Pod Security restricted without the Spark operator's pod webhook; false for an older "
            "Spark operator, whose webhook alone applies it."
        ),
    )
    allowed_images: list[str] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        description=(
            "Glob patterns (`*` matches any characters, `/` too) of the images a run's spec may "
            "name (resources.image, preprocessing.image); the two images above are always allowed."
        ),
    )
    allowed_secrets: list[str] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        description=(
            "Glob patterns of the Secrets a run's spec may name (export.secretName, ticket.secretName, "
            "tracking.mlflow.secretName, resources.env valueFrom.secretKeyRef): each becomes its pods' "
            "environment."
        ),
    )


class DefaultsError(ValueError):
    """LTH_WORKLOAD_DEFAULTS is not what the chart writes."""


def from_environment(environ: dict[str, str] | None = None) -> WorkloadDefaults:
    """The defaults the operator was started with; the built-in ones where it was given none."""
    raw = (os.environ if environ is None else environ).get(ENV_VAR, "").strip()
    if not raw:
        return WorkloadDefaults()
    try:
        return WorkloadDefaults.model_validate(json.loads(raw))
    except (json.JSONDecodeError, ValidationError) as error:
        raise DefaultsError(f"{ENV_VAR}: {error}") from error


def named_images(spec: RunSpec) -> list[tuple[str, str]]:
    """(field, image) of every image a spec names."""
    named = [
        ("spec.resources.image", spec.resources.image),
        ("spec.preprocessing.image", spec.preprocessing.image),
    ]
    return [(field, image) for field, image in named if image is not None]


def named_secrets(spec: RunSpec) -> list[tuple[str, str]]:
    """(field, Secret) of every Secret a spec names."""
    named = [
        ("spec.export.secretName", spec.export.secret_name),
        ("spec.ticket.secretName", spec.ticket.secret_name if spec.ticket else None),
    ]
    if spec.tracking.mlflow is not None:
        named.append(("spec.tracking.mlflow.secretName", spec.tracking.mlflow.secret_name))
    for name, value in sorted(spec.resources.env.items()):
        if not isinstance(value, str):
            field = f"spec.resources.env.{name}.valueFrom.secretKeyRef.name"
            named.append((field, value.value_from.secret_key_ref.name))
    return [(field, secret) for field, secret in named if secret is not None]


def policy_problems(spec: RunSpec, defaults: WorkloadDefaults) -> list[Problem]:
    """The images and Secrets a spec names that the chart's allowedImages and allowedSecrets
    do not let it."""
    problems = []
    own = {defaults.trainer_image, defaults.spark_image}
    for field, image in named_images(spec):
        if image not in own and not any(fnmatchcase(image, p) for p in defaults.allowed_images):
            problems.append(
                Problem(
                    field,
                    f"image {image!r} is not allowed on this cluster (chart value workloads.allowedImages: "
                    f"{', '.join(defaults.allowed_images)})",
                )
            )
    for field, secret in named_secrets(spec):
        if not any(fnmatchcase(secret, p) for p in defaults.allowed_secrets):
            problems.append(
                Problem(
                    field,
                    f"Secret {secret!r} is not one a run may use on this cluster (chart value "
                    f"workloads.allowedSecrets: {', '.join(defaults.allowed_secrets)})",
                )
            )
    return problems


def admitted(submitted: SubmittedSpec, defaults: WorkloadDefaults) -> SubmittedSpec:
    """A submitted spec with the problems of what it names that this cluster does not allow."""
    spec, problems = submitted
    return spec, [*problems, *(policy_problems(spec, defaults) if spec is not None else [])]


def with_training_api(
    submitted: SubmittedSpec, accepted: RunSpec | None, defaults: WorkloadDefaults
) -> SubmittedSpec:
    """The submitted spec with spec.resources.trainingApi filled in where it is unset: the
    accepted spec's (so a changed chart value never moves a running run to another API; a run
    accepted before the field existed ran PyTorchJobs), else the operator's default."""
    spec, problems = submitted
    if spec is None or spec.resources.training_api is not None:
        return submitted
    api: TrainingApi = defaults.training_api
    if accepted is not None:
        api = accepted.resources.training_api or "PyTorchJob"
    resources = spec.resources.model_copy(update={"training_api": api})
    return spec.model_copy(update={"resources": resources}), problems
