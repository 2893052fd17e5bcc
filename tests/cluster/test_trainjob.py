"""A level's TrainJob (Kubeflow Trainer v2.3): the manifest against the upstream CRD and webhook
rules (shared/trainer-v2.md), what is read back from it, and `lth render` / `lth validate` with
spec.resources.trainingApi or the chart's workloads.trainingApi."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lth.api import RunSpec, TicketStatus
from lth.api.defaults import WorkloadDefaults, with_training_api
from lth.api.validation import check_name, check_spec
from lth.api.workload import TERMINATION_LOG, RunPaths
from lth.cli import main
from lth.cluster.children.objects import LABEL_KUEUE_QUEUE, RunRef, level_result_from_pod
from lth.cluster.children.trainjob import observe_trainjob, resources_not_created, trainjob
from tests.k8s_schema import schema_errors
from tests.operator.helpers import chart_training_runtime
from tests.standins.jobset import default_jobset, longest_pod_name
from tests.standins.trainer_v2 import TrainerV2, trainjob_errors

ROOT = Path(__file__).resolve().parents[2]
RUN = RunRef(name="r50", namespace="ml", uid="0b7f6c1e-1111-2222-3333-444455556666")
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def spec_of(**resources: Any) -> RunSpec:
    return RunSpec.model_validate(
        {"dataset": {"path": "imagenet"}, "resources": {"trainingApi": "TrainJob", **resources}}
    )


def build(spec: RunSpec, level: int = 1, branch: Any = "main", **kwargs: Any) -> dict[str, Any]:
    return trainjob(RUN, spec, RunPaths(spec.storage.mount_path, RUN.name), level, branch, 2, **kwargs)


def node_pod(job: dict[str, Any]) -> dict[str, Any]:
    """Our runtime patch's pod template (the only patch we write)."""
    (patch,) = job["spec"]["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    return node["template"]["spec"]["template"]  # type: ignore[no-any-return]


def the_jobset(job: dict[str, Any]) -> dict[str, Any]:
    """The JobSet Trainer builds from the chart's runtime, as JobSet's webhook defaults it."""
    built = TrainerV2.build_jobset(
        {**job, "metadata": {**job["metadata"], "uid": "u"}}, chart_training_runtime()
    )
    default_jobset(built)
    return built


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_examples_trainjob_passes_the_upstream_crd_and_webhooks(
    capsys: pytest.CaptureFixture[str], example: Path, tmp_path: Path
) -> None:
    """`lth render --values` with the chart's workloads.trainingApi TrainJob, for each example:
    the TrainJob validates against the v2.3.0 CRD, Trainer's webhook admits it against the
    chart's runtime, and JobSet's webhook the JobSet built from them."""
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"workloads": {"trainingApi": "TrainJob"}}))
    document = yaml.safe_load(example.read_text())
    flags = ["--ticket-level", "3"] if (document["spec"].get("ticket") or {}).get("run") else []
    assert main(["render", str(example), "--values", str(values), *flags]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    job = [doc for doc in yaml.safe_load_all(out) if doc][-1]
    assert (job["kind"], job["metadata"]["name"]) == ("TrainJob", f"{document['metadata']['name']}-level-00")
    assert schema_errors(job) == []
    assert trainjob_errors(job, chart_training_runtime()) == []
    assert longest_pod_name(the_jobset(job)) == []


def test_the_trainjob_says_what_the_pytorchjob_says_in_trainer_v2s_terms() -> None:
    spec = spec_of(
        gpusPerPod=4,
        pods=2,
        cpu="32",
        memory="128Gi",
        shmSize="32Gi",
        queueName="gpu-queue",
        extraResources={"rdma/rdma_shared_device_a": "1"},
        ipcLock=True,
        env={
            "NCCL_DEBUG": "INFO",
            "NCCL_SOCKET_IFNAME": "eth0",
            "HF_TOKEN": {"valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
        },
    )
    defaults = WorkloadDefaults(
        gpu_node_selector={"nvidia.com/gpu.product": "H100"},
        image_pull_secrets=["regcred"],
        training_runtime="gpu-torch",
    )
    job = build(spec, defaults=defaults)
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and job["metadata"]["name"] == "r50-level-01"
    assert job["metadata"]["labels"][LABEL_KUEUE_QUEUE] == "gpu-queue" and job["spec"]["suspend"] is True
    assert job["metadata"]["annotations"]["lth.dev/attempt"] == "2"
    assert job["spec"]["runtimeRef"] == {"name": "gpu-torch"}
    trainer = job["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 4)
    assert trainer["resourcesPerNode"] == {
        "requests": {"cpu": "32", "memory": "128Gi"},
        "limits": {"rdma/rdma_shared_device_a": "1", "nvidia.com/gpu": "4"},
    }
    # torchrun reads its topology from Trainer's PET_*: no rendezvous flags, no PET_* of ours.
    assert trainer["command"][:3] == ["torchrun", "-m", "lth_trainer"]
    assert not any(arg.startswith("--master") or arg.startswith("--nnodes") for arg in trainer["command"])
    assert trainer["env"] == [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
        {"name": "NCCL_DEBUG", "value": "INFO"},
        {"name": "NCCL_SOCKET_IFNAME", "value": "eth0"},
    ]
    pod = node_pod(job)
    assert pod["metadata"]["labels"] == {"lth.dev/run": "r50", "lth.dev/level": "1", "lth.dev/branch": "main"}
    pod_spec = pod["spec"]
    assert pod_spec["securityContext"]["runAsUser"] == 10001 and pod_spec["securityContext"]["runAsNonRoot"]
    assert pod_spec["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert pod_spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert [v["name"] for v in pod_spec["volumes"]] == ["lth-data", "dshm"]
    assert pod_spec["volumes"][1]["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}
    (container,) = pod_spec["containers"]
    assert container["name"] == "node" and "env" not in container  # Trainer refuses env in a patch
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/mnt/lth", "/dev/shm"]
    assert schema_errors(job) == [] and trainjob_errors(job, chart_training_runtime()) == []


def test_the_trainjob_reads_a_transfer_tickets_credentials_key_by_key() -> None:
    spec = RunSpec.model_validate(
        {
            "dataset": {"path": "target"},
            "resources": {"trainingApi": "TrainJob"},
            "ticket": {"url": "s3://tickets/r50", "secretName": "s3-creds"},
        }
    )
    ticket = TicketStatus(source="s3://tickets/r50", url="s3://tickets/r50", density=0.2)
    job = build(spec, level=0, ticket=ticket)
    env = {e["name"]: e for e in job["spec"]["trainer"]["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "s3-creds", "key": "AWS_SECRET_ACCESS_KEY", "optional": True}
    }
    assert {"AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL"} <= set(env)
    command = job["spec"]["trainer"]["command"]
    assert command[command.index("--ticket-url") + 1] == "s3://tickets/r50"


def test_the_trainjob_reaches_mlflow_with_its_secrets_keys_by_reference() -> None:
    spec = RunSpec.model_validate(
        {
            "dataset": {"path": "x"},
            "resources": {"trainingApi": "TrainJob"},
            "tracking": {"mlflow": {"trackingUri": "https://mlflow.example", "secretName": "mlflow-creds"}},
        }
    )
    env = build(spec)["spec"]["trainer"]["env"]
    refs = [e["valueFrom"]["secretKeyRef"] for e in env]
    assert refs and all(ref["name"] == "mlflow-creds" and ref["optional"] for ref in refs)
    assert all("value" not in e for e in env)


def test_a_dollar_in_an_argument_stays_literal() -> None:
    spec = RunSpec.model_validate(
        {"dataset": {"path": "data/$(HOME)"}, "resources": {"trainingApi": "TrainJob"}}
    )
    command = build(spec)["spec"]["trainer"]["command"]
    assert any("$$(HOME)" in arg for arg in command)


@pytest.mark.parametrize(
    ("conditions", "suspend", "jobs", "state", "stuck"),
    [
        ([], True, [], "Pending", "WaitingForQueue"),
        (
            [("Suspended", "True", "Suspended", "TrainJob is suspended")],
            True,
            [],
            "Pending",
            "WaitingForQueue",
        ),
        ([], False, [], "Pending", None),
        (
            [("Suspended", "False", "Resumed", "TrainJob is resumed")],
            False,
            [{"name": "node", "active": 1}],
            "Running",
            None,
        ),
        (
            [("Complete", "True", "AllJobsCompleted", "jobset completed successfully")],
            False,
            [],
            "Succeeded",
            None,
        ),
        (
            [
                (
                    "Failed",
                    "True",
                    "FailedJobs",
                    "jobset failed due to one or more job failures (first failed job: j-node-0)",
                )
            ],
            False,
            [],
            "Failed",
            None,
        ),
    ],
)
def test_a_trainjob_reads_back_from_the_only_conditions_trainer_writes(
    conditions: list[tuple[str, str, str, str]],
    suspend: bool,
    jobs: list[dict[str, Any]],
    state: str,
    stuck: str | None,
) -> None:
    obj = {
        "metadata": {
            "name": "j",
            "labels": {LABEL_KUEUE_QUEUE: "team-a"},
            "annotations": {"lth.dev/attempt": "3"},
        },
        "spec": {"suspend": suspend},
        "status": {
            "conditions": [
                dict(zip(("type", "status", "reason", "message"), c, strict=True)) for c in conditions
            ],
            "jobsStatus": jobs,
        },
    }
    child = observe_trainjob(obj)
    assert (child.state, child.attempt) == (state, 3)
    assert (child.stuck.reason if child.stuck else None) == stuck
    if state == "Failed":
        assert child.message.endswith("(first failed job: j-node-0)")
    if stuck:
        assert child.stuck is not None and "queue 'team-a'" in child.stuck.detail


def _event(uid: str, message: str, **times: str) -> dict[str, Any]:
    return {
        "involvedObject": {"kind": "TrainJob", "uid": uid},
        "reason": "TrainJobResourcesCreationFailed",
        "message": message,
        **times,
    }


def test_trainers_reconcile_errors_are_read_from_its_events_api_v1_events() -> None:
    obj = {"metadata": {"name": "j", "uid": "u1"}, "spec": {"runtimeRef": {"name": "lth-torch"}}}
    assert resources_not_created(obj, []) is None
    missing = (
        "TrainJob resources reconciliation failed: not found ClusterTrainingRuntime specified in TrainJob: "
        'clustertrainingruntimes.trainer.kubeflow.org "lth-torch" not found'
    )
    refused = (
        'TrainJob resources reconciliation failed: admission webhook "vjobset.kb.io" denied the request: x'
    )
    events = [
        _event("u0", refused, eventTime="2026-12-06T10:00:09.000000Z"),  # an earlier TrainJob's
        _event("u1", missing, eventTime="2026-12-06T10:00:00.500000Z"),
        _event(
            "u1",
            refused,
            eventTime="2026-12-06T10:00:00.100000Z",
            series={"count": 3, "lastObservedTime": "2026-12-06T10:00:01.000000Z"},
        ),
    ]
    stuck = resources_not_created(obj, events)
    assert stuck is not None and (stuck.reason, stuck.subject) == ("ResourcesNotCreated", "TrainJob j")
    assert stuck.detail == refused  # its series' last one is the latest
    stuck = resources_not_created(obj, events[:2])
    assert stuck is not None and stuck.reason == "RuntimeMissing"
    assert "install the ClusterTrainingRuntime 'lth-torch'" in stuck.detail


def test_node_zeros_termination_message_is_the_levels_result() -> None:
    result = {"level": 1, "branch": "main", "density": 0.8, "top1": 71.5}
    pod = {
        "status": {
            "containerStatuses": [{"name": "node", "state": {"terminated": {"message": json.dumps(result)}}}]
        }
    }
    found = level_result_from_pod(pod, "node", 1, "main")
    assert found is not None and found.top1 == 71.5
    assert level_result_from_pod(pod, "pytorch", 1, "main") is None


def test_a_run_name_leaves_room_for_the_longest_pod_name_jobset_allows() -> None:
    """`<job>-node-0-<last index>-abcde` within 63 (JobSet's webhook): 6 characters fewer than
    the PyTorchJob's `<job>-worker-<n>` Service allows."""
    spec = RunSpec.model_validate(
        {"dataset": {"path": "x"}, "pruning": {"levels": 10}, "resources": {"pods": 2}}
    )
    trainjob_spec = spec.model_copy(
        update={"resources": spec.resources.model_copy(update={"training_api": "TrainJob"})}
    )
    fits = "r" * 39  # r..-level-10-node-0-1-abcde: 63
    assert check_name(fits, trainjob_spec) == [] and check_name(fits + "x", spec) == []
    (problem,) = check_name(fits + "x", trainjob_spec)
    assert problem.path == "metadata.name"
    assert "at most 39" in problem.message and f"'{fits}x-level-10-node-0-1-abcde'" in problem.message


def test_a_trainjob_cannot_carry_a_priority_class() -> None:
    (problem,) = check_spec(spec_of(priorityClassName="research-high"))
    assert problem.path == "spec.resources.priorityClassName"
    assert "runtimePatches do not carry priorityClassName" in problem.message  # Trainer v2.3
    assert check_spec(spec_of()) == []


def test_the_training_api_comes_from_the_accepted_spec_then_the_chart() -> None:
    spec = RunSpec.model_validate({"dataset": {"path": "x"}})
    train_jobs = WorkloadDefaults(training_api="TrainJob")
    filled, _ = with_training_api((spec, []), None, train_jobs)
    assert filled is not None and filled.resources.training_api == "TrainJob"
    accepted = spec.model_copy(
        update={"resources": spec.resources.model_copy(update={"training_api": "PyTorchJob"})}
    )
    kept, _ = with_training_api((spec, []), accepted, train_jobs)  # the chart changed mid-run
    assert kept is not None and kept.resources.training_api == "PyTorchJob"
    old, _ = with_training_api((spec, []), spec, train_jobs)  # accepted before the field existed
    assert old is not None and old.resources.training_api == "PyTorchJob"
    chosen = spec_of()
    assert with_training_api((chosen, []), accepted, WorkloadDefaults())[0] == chosen
    # Where it ran is no part of what the workloads and the ticket record.
    assert "trainingApi" not in json.dumps(filled.to_public_wire())


def test_lth_validate_checks_names_for_the_clusters_training_api(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = {"dataset": {"path": "x"}, "pruning": {"levels": 10}, "resources": {"pods": 2}}
    run = {
        "apiVersion": "lth.dev/v1alpha1",
        "kind": "LotteryTicketRun",
        "metadata": {"name": "r" * 42},
        "spec": spec,
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run))
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"workloads": {"trainingApi": "TrainJob"}}))
    assert main(["validate", str(path)]) == 0
    capsys.readouterr()
    assert main(["validate", str(path), "--values", str(values)]) == 1
    assert "-node-0-1-abcde" in capsys.readouterr().err
    explicit = copy.deepcopy(run)
    explicit["spec"]["resources"]["trainingApi"] = "TrainJob"
    path.write_text(yaml.safe_dump(explicit))
    assert main(["validate", str(path)]) == 1


def test_the_charts_runtime_keeps_a_failed_pod_and_its_message() -> None:
    runtime = chart_training_runtime({"trainingRuntime": "team-torch", "imagePullPolicy": "Always"})
    assert schema_errors(runtime) == []
    assert runtime["metadata"]["name"] == "team-torch"
    (node,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    assert node["template"]["metadata"]["labels"] == {
        "trainer.kubeflow.org/trainjob-ancestor-step": "trainer"
    }
    assert node["template"]["spec"]["backoffLimit"] == 0
    pod = node["template"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["name"] == "node" and container["imagePullPolicy"] == "Always"
    assert (container["terminationMessagePath"], container["terminationMessagePolicy"]) == (
        TERMINATION_LOG,
        "FallbackToLogsOnError",
    )
    assert "failurePolicy" not in runtime["spec"]["template"]["spec"]  # a failed Job fails the JobSet
