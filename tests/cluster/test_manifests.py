"""Every child the operator can emit is valid for the real controllers' CRDs, named and owned right."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lth.api import Branch, LevelResult, LevelStatus, RunSpec, RunStatus, TicketStatus, Toleration
from lth.api.defaults import WorkloadDefaults
from lth.api.workload import SPARK_MAIN_IN_IMAGE, RunPaths, trainer_arguments
from lth.cluster.children.export_job import export_job, observe_job
from lth.cluster.children.objects import (
    ANNOTATION_ATTEMPT,
    CHILD_RESOURCES,
    LABEL_KUEUE_QUEUE,
    LABEL_RUN,
    TRAINER_CONTAINER,
    RunRef,
    level_result_from_pod,
)
from lth.cluster.children.pytorchjob import (
    master_pod_name,
    observe_pytorch_job,
    pytorch_job,
)
from lth.cluster.children.spark_application import observe_spark_application, spark_application
from tests.k8s_schema import schema_errors

ROOT = Path(__file__).resolve().parents[2]
RUN = RunRef(name="r50", namespace="ml", uid="0b7f6c1e-1111-2222-3333-444455556666")
BRANCHES: list[Branch] = ["main", "random-reinit", "random-prune"]


def example_spec(name: str) -> RunSpec:
    return RunSpec.model_validate(yaml.safe_load((ROOT / "examples" / name).read_text())["spec"])


def spec_with(**sections: dict[str, Any]) -> RunSpec:
    return RunSpec.model_validate({"dataset": {"path": "imagenet"}, **sections})


SPECS: dict[str, RunSpec] = {
    "default": spec_with(),
    "imagenet-example": example_spec("imagenet-resnet50.yaml"),
    "cpu-example": example_spec("cpu-smallcnn.yaml"),
    # The example's resources with the optional add-ons it shows commented out (Kueue, GFD labels).
    "queued-gpu": spec_with(
        resources={
            "gpusPerPod": 4,
            "cpu": "32",
            "memory": "128Gi",
            "shmSize": "32Gi",
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "queueName": "gpu-queue",
        }
    ),
    "multi-pod": spec_with(resources={"pods": 4, "gpusPerPod": 8}),
    "cpu-only": spec_with(resources={"gpusPerPod": 0, "cpu": "2", "memory": "4Gi", "shmSize": "1Gi"}),
    "scheduling": spec_with(
        resources={
            "nodeSelector": {"pool": "a100"},
            "tolerations": [
                {
                    "key": "gpu",
                    "operator": "Equal",
                    "value": "yes",
                    "effect": "NoExecute",
                    "tolerationSeconds": 60,
                },
                {"operator": "Exists"},
            ],
            "priorityClassName": "research-high",
            "queueName": "team-a",
        }
    ),
    "sub-path": spec_with(storage={"claimName": "shared", "mountPath": "/data", "subPath": "lth/runs"}),
    "prepared": spec_with(dataset={"format": "prepared", "path": "runs/old/data"}),
    "tracked": spec_with(
        resources={"env": {"NCCL_DEBUG": "INFO"}},
        tracking={"mlflow": {"trackingUri": "https://mlflow.example", "secretName": "mlflow-credentials"}},
    ),
}


def paths(spec: RunSpec) -> RunPaths:
    return RunPaths(storage_root=spec.storage.mount_path, run_name=RUN.name)


def all_children() -> list[tuple[str, dict[str, Any]]]:
    children = []
    for label, spec in SPECS.items():
        children.append((f"{label}/prep", spark_application(RUN, spec, paths(spec), 1, "lth-spark")))
        for branch in BRANCHES:
            job = pytorch_job(RUN, spec, paths(spec), 3, branch, 2)
            children.append((f"{label}/level-03-{branch}", job))
    return children


@pytest.mark.parametrize(("label", "child"), all_children(), ids=[c[0] for c in all_children()])
def test_every_child_validates_against_the_upstream_crd(label: str, child: dict[str, Any]) -> None:
    assert schema_errors(child) == []


def test_child_resources_name_the_kinds_emitted() -> None:
    for _, child in all_children():
        group, version, _plural = CHILD_RESOURCES[child["kind"]]
        assert child["apiVersion"] == f"{group}/{version}"


def test_the_validator_refuses_unknown_fields_and_wrong_types() -> None:
    job = pytorch_job(RUN, SPECS["default"], paths(SPECS["default"]), 0, "main", 1)
    broken = copy.deepcopy(job)
    broken["spec"]["runPolicy"]["cleanupPolicy"] = "None"  # misspelt: the API server would prune it
    broken["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = "1"
    pod = broken["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 4.5
    broken["metadata"]["labels"]["x"] = 1
    errors = "\n".join(schema_errors(broken))
    assert "cleanupPolicy" in errors
    assert "spec.pytorchReplicaSpecs.Master.replicas" in errors
    assert "nvidia.com/gpu" in errors
    assert "metadata.labels.x" in errors
    app = spark_application(RUN, SPECS["default"], paths(SPECS["default"]), 1, "sa")
    app["spec"]["mode"] = "standalone"
    assert any(e.startswith("spec.mode") for e in schema_errors(app))


def test_names_labels_attempt_and_owner() -> None:
    spec = SPECS["default"]
    app = spark_application(RUN, spec, paths(spec), 3, "lth-spark")
    job = pytorch_job(RUN, spec, paths(spec), 7, "random-prune", 2)
    assert app["metadata"]["name"] == "r50-prep"
    assert job["metadata"]["name"] == "r50-level-07-rprune"
    assert (
        pytorch_job(RUN, spec, paths(spec), 7, "random-reinit", 1)["metadata"]["name"]
        == "r50-level-07-reinit"
    )
    for child, attempt in ((app, "3"), (job, "2")):
        meta = child["metadata"]
        assert meta["namespace"] == "ml"
        assert meta["annotations"][ANNOTATION_ATTEMPT] == attempt
        assert meta["labels"][LABEL_RUN] == "r50"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "lth-operator"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "lth.dev/v1alpha1",
                "kind": "LotteryTicketRun",
                "name": "r50",
                "uid": RUN.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def test_spark_application_runs_the_prep_job_on_the_volume() -> None:
    spec = SPECS["imagenet-example"]
    app = spark_application(RUN, spec, paths(spec), 1, "lth-spark")["spec"]
    assert (app["type"], app["mode"], app["mainApplicationFile"]) == (
        "Python",
        "cluster",
        SPARK_MAIN_IN_IMAGE,
    )
    assert app["restartPolicy"] == {"type": "Never"}
    assert app["arguments"][:4] == ["--input", "/mnt/lth/imagenet", "--output", "/mnt/lth/runs/r50/data"]
    assert app["driver"]["serviceAccount"] == "lth-spark"
    assert "serviceAccount" not in app["executor"]
    assert (app["executor"]["instances"], app["executor"]["cores"], app["executor"]["memory"]) == (8, 4, "8g")
    # Spark's own volume settings mount the claim: no pod webhook needed for it.
    assert "volumes" not in app
    for side in ("driver", "executor"):
        assert "volumeMounts" not in app[side]
        prefix = f"spark.kubernetes.{side}.volumes.persistentVolumeClaim.lth-data"
        assert app["sparkConf"][f"{prefix}.options.claimName"] == "lth-data"
        assert app["sparkConf"][f"{prefix}.mount.path"] == "/mnt/lth"
        assert app[side]["podSecurityContext"]["runAsUser"] == 10001
    # The driver's termination message names the file when the input is bad.
    assert app["arguments"][4:6] == ["--termination-log", "/dev/termination-log"]


def _master(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["pytorchReplicaSpecs"]["Master"]


def _container(job: dict[str, Any]) -> dict[str, Any]:
    containers = _master(job)["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["pytorch"]
    return containers[0]


def test_single_pod_gpu_job() -> None:
    spec = SPECS["queued-gpu"]
    job = pytorch_job(RUN, spec, paths(spec), 0, "main", 1)
    assert set(job["spec"]["pytorchReplicaSpecs"]) == {"Master"}
    assert _master(job)["replicas"] == 1 and _master(job)["restartPolicy"] == "Never"
    assert job["spec"]["nprocPerNode"] == "4"
    # No backoffLimit: past it, training-operator <= 1.9.3 deletes the failed master pod (issue 3419).
    assert job["spec"]["runPolicy"] == {"cleanPodPolicy": "Running", "suspend": True}
    container = _container(job)
    assert container["resources"] == {
        "requests": {"cpu": "32", "memory": "128Gi"},
        "limits": {"nvidia.com/gpu": "4"},
    }
    assert container["terminationMessagePath"] == "/dev/termination-log"
    command = container["command"]
    assert command[:5] == [
        "torchrun",
        "--master-addr=$(MASTER_ADDR)",
        "--master-port=$(MASTER_PORT)",
        "-m",
        "lth_trainer",
    ]
    assert command[5:] == trainer_arguments(spec, paths(spec), 0, "main")
    pod = _master(job)["template"]["spec"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}} in pod["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert job["metadata"]["labels"][LABEL_KUEUE_QUEUE] == "gpu-queue"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_multi_pod_job_has_workers() -> None:
    spec = SPECS["multi-pod"]
    job = pytorch_job(RUN, spec, paths(spec), 1, "main", 1)
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert (replicas["Master"]["replicas"], replicas["Worker"]["replicas"]) == (1, 3)
    assert replicas["Worker"]["template"] == replicas["Master"]["template"]
    assert job["spec"]["nprocPerNode"] == "8"


def test_cpu_job_asks_for_no_gpu_and_one_process() -> None:
    spec = SPECS["cpu-only"]
    job = pytorch_job(RUN, spec, paths(spec), 0, "main", 1)
    assert "limits" not in _container(job)["resources"]
    assert job["spec"]["nprocPerNode"] == "1"
    assert "suspend" not in job["spec"]["runPolicy"]
    assert LABEL_KUEUE_QUEUE not in job["metadata"]["labels"]
    pod = _master(job)["template"]["spec"]
    assert not {"nodeSelector", "tolerations", "priorityClassName"} & set(pod)


def test_scheduling_options() -> None:
    spec = SPECS["scheduling"]
    pod = _master(pytorch_job(RUN, spec, paths(spec), 0, "main", 1))["template"]["spec"]
    assert pod["priorityClassName"] == "research-high"
    assert pod["tolerations"][0] == {
        "key": "gpu",
        "operator": "Equal",
        "value": "yes",
        "effect": "NoExecute",
        "tolerationSeconds": 60,
    }
    assert pod["tolerations"][1] == {"operator": "Exists"}


def test_sub_path_is_mounted_everywhere() -> None:
    spec = SPECS["sub-path"]
    mount = {"name": "lth-data", "mountPath": "/data", "subPath": "lth/runs"}
    assert mount in _container(pytorch_job(RUN, spec, paths(spec), 0, "main", 1))["volumeMounts"]
    conf = spark_application(RUN, spec, paths(spec), 1, "sa")["spec"]["sparkConf"]
    for side in ("driver", "executor"):
        prefix = f"spark.kubernetes.{side}.volumes.persistentVolumeClaim.lth-data.mount"
        assert (conf[f"{prefix}.path"], conf[f"{prefix}.subPath"]) == ("/data", "lth/runs")


def test_every_writer_of_the_volume_runs_as_one_uid_and_gid() -> None:
    spec = SPECS["multi-pod"]
    job = pytorch_job(RUN, spec, paths(spec), 1, "main", 1)
    app = spark_application(RUN, spec, paths(spec), 1, "sa")["spec"]
    contexts = [
        replica["template"]["spec"]["securityContext"]
        for replica in job["spec"]["pytorchReplicaSpecs"].values()
    ] + [app["driver"]["podSecurityContext"], app["executor"]["podSecurityContext"]]
    for context in contexts:
        assert (context["runAsUser"], context["runAsGroup"], context["runAsNonRoot"]) == (10001, 10001, True)
    own = spec.model_copy(
        update={"storage": spec.storage.model_copy(update={"run_as_user": 2000, "run_as_group": 3000})}
    )
    pod = _master(pytorch_job(RUN, own, paths(own), 1, "main", 1))["template"]["spec"]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (2000, 3000)


def test_cluster_defaults_fill_what_the_spec_leaves_out() -> None:
    defaults = WorkloadDefaults(
        trainer_image="registry.example/lth-trainer:1",
        spark_image="registry.example/lth-spark:1",
        image_pull_policy="Always",
        image_pull_secrets=["regcred"],
        gpu_node_selector={"gpu": "yes"},
        gpu_tolerations=[Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
        run_as_user=4242,
        run_as_group=4343,
    )
    spec = SPECS["multi-pod"]
    pod = _master(pytorch_job(RUN, spec, paths(spec), 1, "main", 1, None, defaults))["template"]["spec"]
    assert (pod["containers"][0]["image"], pod["containers"][0]["imagePullPolicy"]) == (
        "registry.example/lth-trainer:1",
        "Always",
    )
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == {"gpu": "yes"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["securityContext"]["runAsUser"] == 4242
    app = spark_application(RUN, spec, paths(spec), 1, "sa", defaults)["spec"]
    assert (app["image"], app["imagePullPolicy"], app["imagePullSecrets"]) == (
        "registry.example/lth-spark:1",
        "Always",
        ["regcred"],
    )
    assert app["driver"]["podSecurityContext"]["runAsGroup"] == 4343
    # The spec wins; a CPU job gets no GPU placement.
    placed = SPECS["queued-gpu"]
    pod = _master(pytorch_job(RUN, placed, paths(placed), 1, "main", 1, None, defaults))["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    cpu = SPECS["cpu-only"]
    pod = _master(pytorch_job(RUN, cpu, paths(cpu), 0, "main", 1, None, defaults))["template"]["spec"]
    assert not {"nodeSelector", "tolerations"} & set(pod)


@pytest.mark.parametrize(
    ("ticket", "flags"),
    [
        (
            TicketStatus(source="run digits level 3", run="digits", level=3),
            ["--ticket-run-dir", "/mnt/lth/runs/digits", "--ticket-level", "3"],
        ),
        (
            TicketStatus(source="directory tickets/digits", path="tickets/digits"),
            ["--ticket-dir", "/mnt/lth/tickets/digits"],
        ),
        (
            TicketStatus(source="url https://t.example/digits/", url="https://t.example/digits/"),
            ["--ticket-url", "https://t.example/digits/"],
        ),
    ],
    ids=["run", "path", "url"],
)
def test_transfer_jobs_read_the_resolved_ticket(ticket: TicketStatus, flags: list[str]) -> None:
    source = {"run": ticket.run, "path": ticket.path, "url": ticket.url}
    spec = spec_with(ticket={key: value for key, value in source.items() if value})
    branches: list[Branch] = ["main", "dense", "random-prune"]
    for branch in branches:
        job = pytorch_job(RUN, spec, paths(spec), 0, branch, 1, ticket)
        assert schema_errors(job) == []
        arguments = _container(job)["command"][5:]
        assert arguments == trainer_arguments(spec, paths(spec), 0, branch, ticket=ticket)
        assert arguments[: len(flags)] == flags


def kubelet_expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion of a command argument: `$$` -> `$`, `$(VAR)` -> its value when defined."""
    out, i = [], 0
    while i < len(arg):
        if arg.startswith("$$", i):
            out.append("$")
            i += 2
        elif arg.startswith("$(", i) and ")" in arg[i:]:
            end = arg.index(")", i)
            name = arg[i + 2 : end]
            out.append(env.get(name, arg[i : end + 1]))
            i = end + 1
        else:
            out.append(arg[i])
            i += 1
    return "".join(out)


def test_the_command_survives_kubernetes_expansion() -> None:
    spec = spec_with(dataset={"path": "data/$(HOME)/$x"})
    command = _container(pytorch_job(RUN, spec, paths(spec), 0, "main", 1))["command"]
    env = {"MASTER_ADDR": "r50-level-00-master-0", "MASTER_PORT": "23456", "HOME": "/root"}
    expanded = [kubelet_expand(a, env) for a in command]
    assert expanded[1:3] == ["--master-addr=r50-level-00-master-0", "--master-port=23456"]
    assert expanded[5:] == trainer_arguments(spec, paths(spec), 0, "main")
    assert "data/$(HOME)/$x" in expanded[-1]


# --------------------------------------------------------------------------- reading back

RESULT = {"level": 3, "branch": "main", "density": 0.512, "top1": 74.9, "top5": 92.1, "durationSeconds": 3600}


def pod_with_message(message: Any, container: str = "pytorch") -> dict[str, Any]:
    return {
        "metadata": {"name": master_pod_name("r50-level-03")},
        "status": {
            "containerStatuses": [
                {"name": container, "state": {"terminated": {"exitCode": 0, "message": message}}}
            ]
        },
    }


def test_level_result_read_from_the_termination_message() -> None:
    result = level_result_from_pod(pod_with_message(json.dumps(RESULT)), TRAINER_CONTAINER, 3, "main")
    assert result == LevelResult(level=3, density=0.512, top1=74.9, top5=92.1, duration_seconds=3600)
    assert master_pod_name("r50-level-03") == "r50-level-03-master-0"


@pytest.mark.parametrize(
    "pod",
    [
        {},
        {"status": {}},
        {"status": {"containerStatuses": [{"name": "pytorch", "state": {"running": {}}}]}},
        {"status": {"containerStatuses": [None, "x", {"name": "pytorch", "state": "garbage"}]}},
        {"status": {"containerStatuses": {"name": "pytorch"}}},
        pod_with_message(None),
        pod_with_message(""),
        pod_with_message("Traceback (most recent call last):\n  File ..."),
        pod_with_message(json.dumps(RESULT)[:40]),  # cut at the 4 KiB limit
        pod_with_message("[1, 2]"),
        pod_with_message(json.dumps({**RESULT, "top1": 140})),
        pod_with_message(json.dumps({**RESULT, "level": 4})),
        pod_with_message(json.dumps({**RESULT, "branch": "random-reinit"})),
        pod_with_message(json.dumps(RESULT), container="sidecar"),
    ],
    ids=[
        "no-status",
        "no-containers",
        "still-running",
        "odd-entries",
        "statuses-not-a-list",
        "no-message",
        "empty",
        "log-tail",
        "truncated",
        "not-an-object",
        "out-of-range",
        "other-level",
        "other-branch",
        "other-container",
    ],
)
def test_garbage_is_no_result(pod: dict[str, Any]) -> None:
    assert level_result_from_pod(pod, TRAINER_CONTAINER, 3, "main") is None


def spark_app(
    state: str | None, *, attempt: str | None = "2", error: str = "", deleting: bool = False
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "r50-prep", "annotations": {}}
    if attempt is not None:
        meta["annotations"][ANNOTATION_ATTEMPT] = attempt
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    obj: dict[str, Any] = {"metadata": meta}
    if state is not None:
        obj["status"] = {"applicationState": {"state": state, "errorMessage": error}}
    return obj


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (None, "Pending"),
        ("", "Pending"),
        ("SUBMITTED", "Pending"),
        ("SUBMISSION_FAILED", "Pending"),
        ("PENDING_RERUN", "Pending"),
        ("RUNNING", "Running"),
        ("SUCCEEDING", "Running"),
        ("FAILING", "Running"),
        ("COMPLETED", "Succeeded"),
        ("FAILED", "Failed"),
    ],
)
def test_spark_application_states(state: str | None, expected: str) -> None:
    assert observe_spark_application(spark_app(state)).state == expected


def test_spark_application_failure_message_attempt_and_deletion() -> None:
    observed = observe_spark_application(spark_app("FAILED", error="driver pod OOMKilled"))
    assert (observed.name, observed.attempt, observed.deleting) == ("r50-prep", 2, False)
    assert "driver pod OOMKilled" in observed.message
    assert observe_spark_application(spark_app("RUNNING", deleting=True)).deleting
    assert observe_spark_application(spark_app("RUNNING", attempt=None)).attempt == 1
    assert observe_spark_application(spark_app("RUNNING", attempt="garbage")).attempt == 1


def job_with(*conditions: tuple[str, str], message: str = "") -> dict[str, Any]:
    return {
        "metadata": {"name": "r50-level-03", "annotations": {ANNOTATION_ATTEMPT: "3"}},
        "status": {"conditions": [{"type": t, "status": s, "message": message} for t, s in conditions]},
    }


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ((), "Pending"),
        ((("Created", "True"),), "Pending"),
        ((("Created", "True"), ("Suspended", "True")), "Pending"),
        ((("Created", "True"), ("Running", "True")), "Running"),
        ((("Running", "False"), ("Restarting", "True")), "Running"),
        ((("Running", "False"), ("Succeeded", "True")), "Succeeded"),
        ((("Running", "False"), ("Succeeded", "False")), "Pending"),
        ((("Running", "False"), ("Failed", "True")), "Failed"),
    ],
)
def test_pytorch_job_states(conditions: tuple[tuple[str, str], ...], expected: str) -> None:
    assert observe_pytorch_job(job_with(*conditions)).state == expected


def test_pytorch_job_carries_result_message_and_attempt() -> None:
    result = LevelResult.model_validate(RESULT)
    done = observe_pytorch_job(job_with(("Succeeded", "True")), result)
    assert (done.attempt, done.result) == (3, result)
    failed = observe_pytorch_job(job_with(("Failed", "True"), message="pod r50-level-03-master-0 exited 137"))
    assert failed.message == "pod r50-level-03-master-0 exited 137"
    deleting = job_with(("Running", "True"))
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert observe_pytorch_job(deleting).deleting


# --------------------------------------------------------------------------- export Job


def test_the_export_job_runs_lth_report_on_the_volume_without_a_gpu() -> None:
    import kubernetes_validate

    spec = spec_with(
        resources={"gpusPerPod": 4},
        export={
            "url": "s3://tickets/r50",
            "secretName": "s3-credentials",
            "endpointUrl": "http://minio:9000",
        },
    )
    status = RunStatus(phase="Succeeded", levels=[], accepted_spec=spec)
    status.levels.append(LevelStatus(name="r50-level-00", level=0, phase="Succeeded", density=1.0, top1=76.1))
    status.accepted_spec = spec.model_copy(
        update={
            "dataset": spec.dataset.model_copy(update={"path": "in/$(B)"}),
            "resources": spec.resources.model_copy(update={"env": {"A": "not-to-be-shown"}}),
        }
    )
    job = export_job(RUN, spec, paths(spec), 2, status)
    kubernetes_validate.validate(job, "1.34", strict=True)
    assert (
        job["metadata"]["name"] == "r50-export" and job["metadata"]["annotations"][ANNOTATION_ATTEMPT] == "2"
    )
    assert job["metadata"]["ownerReferences"][0]["uid"] == RUN.uid  # deleted with the run
    assert job["spec"]["backoffLimit"] == 0  # retries are the planner's, a new Job per attempt
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsUser"] == 10001
    (container,) = pod["containers"]
    assert container["command"] == [
        "lth",
        "report",
        "/mnt/lth/runs/r50",
        "--status-env",
        "LTH_STATUS",
        "--termination-log",
        "/dev/termination-log",
        "--upload",
        "s3://tickets/r50",
        "--endpoint-url",
        "http://minio:9000",
    ]
    assert "limits" not in container["resources"]  # no GPU
    assert container["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert container["volumeMounts"] == [{"name": "lth-data", "mountPath": "/mnt/lth"}]
    env = {item["name"]: item["value"] for item in container["env"]}
    # The run's status reaches the pod whole, past Kubernetes' $(VAR) expansion, but for the
    # values of resources.env: a pod's environment is readable by whoever may read the Job.
    expanded = kubelet_expand(env["LTH_STATUS"], {"B": "oops"})
    assert RunStatus.model_validate_json(expanded) == RunStatus.model_validate(status.to_public_wire())
    assert "not-to-be-shown" not in env["LTH_STATUS"]


def test_mlflow_credentials_reach_the_trainer_and_export_pods_only_by_reference() -> None:
    spec = SPECS["tracked"]
    trainer = _container(pytorch_job(RUN, spec, paths(spec), 3, "main", 1))
    export_pod = export_job(RUN, spec, paths(spec), 1, RunStatus(accepted_spec=spec))["spec"]["template"]
    for container in (trainer, export_pod["spec"]["containers"][0]):
        env = {item["name"]: item for item in container["env"]}
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
            # Each optional: the Secret holds a user and password, or a token.
            ref = {"name": "mlflow-credentials", "key": key, "optional": True}
            assert env[key] == {"name": key, "valueFrom": {"secretKeyRef": ref}}
    assert {"name": "NCCL_DEBUG", "value": "INFO"} in trainer["env"]

    no_secret = spec_with(tracking={"mlflow": {"trackingUri": "https://mlflow.example"}})
    assert "env" not in _container(pytorch_job(RUN, no_secret, paths(no_secret), 3, "main", 1))


LIMIT_MESSAGE = "Job has reached the specified backoff limit"


@pytest.mark.parametrize(
    ("conditions", "active", "expected"),
    [
        ((), 0, "Pending"),
        ((), 1, "Running"),
        ((("SuccessCriteriaMet", "True"), ("Complete", "True")), 0, "Succeeded"),
        ((("FailureTarget", "True"),), 1, "Running"),
        ((("FailureTarget", "True"), ("Failed", "True")), 0, "Failed"),
    ],
)
def test_export_job_states(conditions: tuple[tuple[str, str], ...], active: int, expected: str) -> None:
    job = {
        "metadata": {"name": "r50-export", "annotations": {ANNOTATION_ATTEMPT: "2"}},
        "status": {
            "active": active,
            "conditions": [
                {
                    "type": t,
                    "status": s,
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
                for t, s in conditions
            ],
        },
    }
    observed = observe_job(job)
    assert (observed.state, observed.attempt) == (expected, 2)
    if expected == "Failed":
        assert observed.message == LIMIT_MESSAGE
