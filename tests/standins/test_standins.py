"""The stand-ins against the upstream facts they cite (shared/upstream-behaviour.md)."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from lth.api import defaults
from tests.kube.cluster import Cluster
from tests.standins import Cluster as StandIns
from tests.standins import Finished, ProcessRuntime, ScriptedRuntime
from tests.standins.images import Image, usable_by_other_users
from tests.standins.kubelet import ContainerConfigError, Launch, verify_run_as_non_root
from tests.standins.spark_operator import _conf_volumes
from tests.standins.training_operator import new_pod, new_service, pod_environment, set_condition


def job(nproc: str | None = "4", workers: int = 1, **run_policy: Any) -> dict[str, Any]:
    template = {"spec": {"containers": [{"name": "pytorch", "image": "trainer", "command": ["true"]}]}}
    replicas: dict[str, Any] = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": template}}
    if workers:
        replicas["Worker"] = {"replicas": workers, "restartPolicy": "Never", "template": template}
    spec: dict[str, Any] = {"pytorchReplicaSpecs": replicas, "runPolicy": run_policy}
    if nproc is not None:
        spec["nprocPerNode"] = nproc
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "j", "namespace": "default", "uid": "u-1"},
        "spec": spec,
    }


def test_environment_of_master_and_worker_is_upstreams_worked_example() -> None:
    """upstream-behaviour.md 1b: Master 1 + Worker 1, nprocPerNode "4", the default port."""
    master = {e["name"]: e["value"] for e in pod_environment(job(), "Master", 0)}
    worker = {e["name"]: e["value"] for e in pod_environment(job(), "Worker", 0)}
    assert master == {
        "PYTHONUNBUFFERED": "1",
        "MASTER_PORT": "23456",
        "PET_MASTER_PORT": "23456",
        "MASTER_ADDR": "j-master-0",
        "PET_MASTER_ADDR": "j-master-0",
        "WORLD_SIZE": "8",
        "RANK": "0",
        "PET_NODE_RANK": "0",
        "PET_NPROC_PER_NODE": "4",
        "PET_NNODES": "2",
    }
    assert (worker["RANK"], worker["PET_NODE_RANK"], worker["WORLD_SIZE"]) == ("1", "1", "8")
    unset = {e["name"]: e["value"] for e in pod_environment(job(nproc=None), "Master", 0)}
    assert unset["WORLD_SIZE"] == "2" and "PET_NPROC_PER_NODE" not in unset


def test_pods_services_and_the_init_container() -> None:
    master, worker = new_pod(job(), "Master", 0), new_pod(job(), "Worker", 0)
    assert (master["metadata"]["name"], worker["metadata"]["name"]) == ("j-master-0", "j-worker-0")
    assert master["metadata"]["labels"]["training.kubeflow.org/job-role"] == "master"
    assert "training.kubeflow.org/job-role" not in worker["metadata"]["labels"]
    assert "initContainers" not in master["spec"]
    (init,) = worker["spec"]["initContainers"]
    assert (init["name"], init["image"], "securityContext" in init) == ("init-pytorch", "alpine:3.10", False)
    assert "nslookup j-master-0" in init["command"][2]
    service = new_service(job(), "Master", 0)
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"] == [{"name": "pytorchjob-port", "port": 23456}]


def test_conditions_follow_set_condition() -> None:
    status: dict[str, Any] = {}
    set_condition(status, "Running", "True", "PyTorchJobRunning", "running")
    set_condition(status, "Restarting", "True", "PyTorchJobRestarting", "restarting")
    assert [c["type"] for c in status["conditions"]] == ["Restarting"]  # they exclude each other
    set_condition(status, "Failed", "True", "PyTorchJobFailed", "failed")
    set_condition(status, "Succeeded", "True", "PyTorchJobSucceeded", "too late")
    assert [c["type"] for c in status["conditions"]] == ["Restarting", "Failed"]  # nothing after Failed


def test_run_as_non_root_as_the_kubelet_checks_it() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": {"securityContext": {"runAsNonRoot": True}},
    }
    alpine = Image(user="", uid=0, gid=0, path=Path("/"))
    with pytest.raises(ContainerConfigError) as refused:
        verify_run_as_non_root(pod, {"name": "init-pytorch"}, alpine)
    assert str(refused.value) == (
        'container has runAsNonRoot and image will run as root (pod: "p_ns(u)", container: init-pytorch)'
    )
    verify_run_as_non_root(
        {**pod, "spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": 10001}}},
        {"name": "c"},
        alpine,
    )
    named = Image(user="spark", uid=0, gid=0, path=Path("/"))
    with pytest.raises(ContainerConfigError, match="non-numeric user \\(spark\\)"):
        verify_run_as_non_root(pod, {"name": "c"}, named)
    # A container's own field wins over the pod's.
    verify_run_as_non_root(pod, {"name": "c", "securityContext": {"runAsNonRoot": False}}, alpine)


def test_spark_submit_mounts_the_volumes_of_its_conf() -> None:
    prefix = "spark.kubernetes.driver.volumes.persistentVolumeClaim.data"
    volumes, mounts = _conf_volumes(
        {
            f"{prefix}.options.claimName": "lth",
            f"{prefix}.mount.path": "/mnt/lth",
            f"{prefix}.mount.subPath": "a",
        },
        "driver",
    )
    assert volumes == [{"name": "data", "persistentVolumeClaim": {"claimName": "lth"}}]
    assert mounts == [{"name": "data", "mountPath": "/mnt/lth", "readOnly": False, "subPath": "a"}]


def _master_after_failure(kube: Cluster, fixed: bool) -> tuple[dict[str, Any], list[str]]:
    api_client = kube.api_client()
    custom, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
    body = job(workers=0, backoffLimit=0, cleanPodPolicy="None")
    body["metadata"] = {"name": "j", "namespace": "default"}
    body["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["image"] = (
        "alpine:3.10"
    )
    runtime = ScriptedRuntime(api_client, lambda kind, obj: Finished(False, "Error", "bad input: x", 1))
    with StandIns(api_client, runtime, fixed_3419=fixed):
        custom.create_namespaced_custom_object("kubeflow.org", "v1", "default", "pytorchjobs", body)
        deadline = time.monotonic() + 30
        while True:
            status = custom.get_namespaced_custom_object("kubeflow.org", "v1", "default", "pytorchjobs", "j")
            failed = [c for c in status.get("status", {}).get("conditions", []) if c["type"] == "Failed"]
            if failed:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        time.sleep(0.5)
        pods = [p.metadata.name for p in core.list_namespaced_pod("default").items]
    return failed[0], pods


def test_backoff_limit_zero_loses_the_failed_master_on_release_1_9(kube: Cluster) -> None:
    """kubeflow/trainer issue 3419: pods deleted before Failed, whatever cleanPodPolicy says."""
    failed, pods = _master_after_failure(kube, fixed=False)
    assert failed["message"] == "Job j has failed because it has reached the specified backoff limit"
    assert pods == []


def test_backoff_limit_zero_keeps_the_master_once_fixed(kube: Cluster) -> None:
    failed, pods = _master_after_failure(kube, fixed=True)
    assert failed["reason"] == "PyTorchJobFailed" and pods == ["j-master-0"]


# -- batch/v1 Job ------------------------------------------------------------------------------

JOB_POD_NAME = re.compile(r"export-[bcdfghjklmnpqrstvwxz2456789]{5}")


def batch_job(backoff_limit: int = 0, owner: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """A Job like the operator's export Job: one pod, restartPolicy Never."""
    meta: dict[str, Any] = {"name": "export", "labels": {"app.kubernetes.io/managed-by": "lth-operator"}}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    container = {"name": "export", "image": "alpine:3.10", "command": ["lth", "report"]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
            **spec,
        },
    }


def until(check: Any, timeout: float = 30) -> Any:
    """The first truthy value of `check()`, polled for up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return value


def get_json(kube: Cluster, *what: str) -> Any:
    return json.loads(kube.kubectl("get", *what, "-o", "json").stdout)


def finished_job(kube: Cluster) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = get_json(kube, "job", "export")
        types = {c["type"] for c in job.get("status", {}).get("conditions", [])}
        return job if types & {"Complete", "Failed"} else None

    return until(done)  # type: ignore[no-any-return]


def job_row(kube: Cluster) -> list[str]:
    return kube.kubectl("get", "job", "export").stdout.splitlines()[1].split()[:3]


def test_a_jobs_pod_runs_and_the_job_completes_with_upstreams_conditions(kube: Cluster) -> None:
    """upstream-behaviour.md 5b-5d: pod naming and metadata, SuccessCriteriaMet then Complete."""
    api_client = kube.api_client()
    release = threading.Event()
    seen: list[tuple[str, str]] = []

    def workload(kind: str, obj: dict[str, Any]) -> Finished | None:
        seen.append((kind, obj["metadata"]["name"]))
        return Finished(True) if release.is_set() else None

    with StandIns(api_client, ScriptedRuntime(api_client, workload)) as cluster:
        client.BatchV1Api(api_client).create_namespaced_job("default", batch_job())
        running = until(
            lambda: [p for p in get_json(kube, "pods")["items"] if p["status"]["phase"] == "Running"]
        )
        (pod,) = running
        meta = pod["metadata"]
        job = get_json(kube, "job", "export")
        uid = job["metadata"]["uid"]
        assert JOB_POD_NAME.fullmatch(meta["name"]) and meta["generateName"] == "export-"
        assert meta["labels"] == {  # the template's, which the API server gave these (not the Job's)
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": "export",
            "controller-uid": uid,
            "job-name": "export",
        }
        assert "annotations" not in meta  # no batch.kubernetes.io/job-completion-index: NonIndexed
        assert meta["finalizers"] == ["batch.kubernetes.io/job-tracking"]
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": "export",
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert job["status"]["active"] == 1 and job["status"]["startTime"]
        assert job_row(kube) == ["export", "Running", "0/1"]
        release.set()
        job = finished_job(kube)
        events = cluster.events()
    status = job["status"]
    conditions = [(c["type"], c["status"], c["reason"], c["message"]) for c in status["conditions"]]
    reached = ("True", "CompletionsReached", "Reached expected number of succeeded pods")
    assert conditions == [("SuccessCriteriaMet", *reached), ("Complete", *reached)]
    assert status["succeeded"] == 1 and "active" not in status and "failed" not in status
    assert (status["ready"], status["terminating"], status["uncountedTerminatedPods"]) == (0, 0, {})
    assert status["completionTime"] == status["conditions"][1]["lastTransitionTime"]
    (pod,) = get_json(kube, "pods")["items"]
    assert pod["status"]["phase"] == "Succeeded" and "finalizers" not in pod["metadata"]
    assert job_row(kube) == ["export", "Complete", "1/1"]
    assert ("export", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}") in events
    assert ("export", "Completed", "Job completed") in events
    assert set(seen) == {("Job", "export")}


def _failing(kube: Cluster, backoff_limit: int) -> tuple[dict[str, Any], list[dict[str, Any]], list[Any]]:
    api_client = kube.api_client()
    runtime = ScriptedRuntime(api_client, lambda kind, obj: Finished(False, "Error", "bad input: x", 2))
    with StandIns(api_client, runtime, job_backoff=0.5) as cluster:
        client.BatchV1Api(api_client).create_namespaced_job("default", batch_job(backoff_limit))
        job = finished_job(kube)
        time.sleep(0.5)
        return job, get_json(kube, "pods")["items"], cluster.events()


def test_a_failed_pod_fails_the_job_past_backoff_limit_and_is_kept(kube: Cluster) -> None:
    """upstream-behaviour.md 5e: FailureTarget then Failed, BackoffLimitExceeded; the pod stays."""
    job, pods, events = _failing(kube, backoff_limit=0)
    failed = ("True", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
    conditions = [(c["type"], c["status"], c["reason"], c["message"]) for c in job["status"]["conditions"]]
    assert conditions == [("FailureTarget", *failed), ("Failed", *failed)]
    assert job["status"]["failed"] == 1 and "completionTime" not in job["status"]
    (pod,) = pods
    assert pod["status"]["phase"] == "Failed" and "finalizers" not in pod["metadata"]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["message"]) == (2, "bad input: x")
    assert job_row(kube) == ["export", "Failed", "0/1"]
    assert ("export", "BackoffLimitExceeded", "Job has reached the specified backoff limit") in events


def test_backoff_limit_one_recreates_the_failed_pod_once(kube: Cluster) -> None:
    job, pods, events = _failing(kube, backoff_limit=1)
    assert [p["status"]["phase"] for p in pods] == ["Failed", "Failed"]
    assert all(JOB_POD_NAME.fullmatch(p["metadata"]["name"]) for p in pods)
    assert job["status"]["failed"] == 2
    assert sorted(e[2] for e in events if e[1] == "SuccessfulCreate") == sorted(
        f"Created pod: {p['metadata']['name']}" for p in pods
    )
    assert [c["type"] for c in job["status"]["conditions"]] == ["FailureTarget", "Failed"]


def test_active_deadline_fails_the_job_and_deletes_its_pod(kube: Cluster) -> None:
    api_client = kube.api_client()
    with StandIns(api_client, ScriptedRuntime(api_client, lambda kind, obj: None)):
        client.BatchV1Api(api_client).create_namespaced_job("default", batch_job(activeDeadlineSeconds=1))
        job = finished_job(kube)
        until(lambda: not get_json(kube, "pods")["items"])
    failed = ("True", "DeadlineExceeded", "Job was active longer than specified deadline")
    conditions = [(c["type"], c["status"], c["reason"], c["message"]) for c in job["status"]["conditions"]]
    assert conditions == [("FailureTarget", *failed), ("Failed", *failed)]
    assert job["status"]["failed"] == 1  # the deleted pod counts as failed


def test_a_suspended_job_runs_nothing_until_resumed(kube: Cluster) -> None:
    api_client = kube.api_client()
    with StandIns(api_client, ScriptedRuntime(api_client, lambda kind, obj: Finished(True))) as cluster:
        client.BatchV1Api(api_client).create_namespaced_job("default", batch_job(suspend=True))
        until(lambda: job_row(kube)[1] == "Suspended")
        job = get_json(kube, "job", "export")
        assert "startTime" not in job["status"] and not get_json(kube, "pods")["items"]
        kube.kubectl("patch", "job", "export", "--type=merge", "-p", '{"spec": {"suspend": false}}')
        job = finished_job(kube)
        events = cluster.events()
    suspended = next(c for c in job["status"]["conditions"] if c["type"] == "Suspended")
    assert (suspended["status"], suspended["reason"], suspended["message"]) == (
        "False",
        "JobResumed",
        "Job resumed",
    )
    assert ("export", "Suspended", "Job suspended") in events and (
        "export",
        "Resumed",
        "Job resumed",
    ) in events


def test_deleting_the_owner_collects_the_job_then_its_pods(kube: Cluster) -> None:
    """The Job's pod is held by the tracking finalizer until the controller lets it go."""
    api_client = kube.api_client()
    custom = client.CustomObjectsApi(api_client)
    run = custom.create_namespaced_custom_object(
        "lth.dev",
        "v1alpha1",
        "default",
        "lotteryticketruns",
        {
            "apiVersion": "lth.dev/v1alpha1",
            "kind": "LotteryTicketRun",
            "metadata": {"name": "run"},
            "spec": {"dataset": {"path": "digits"}, "model": {"arch": "smallcnn"}},
        },
    )
    owner = {
        "apiVersion": "lth.dev/v1alpha1",
        "kind": "LotteryTicketRun",
        "name": "run",
        "uid": run["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    with StandIns(api_client, ScriptedRuntime(api_client, lambda kind, obj: None)):
        client.BatchV1Api(api_client).create_namespaced_job("default", batch_job(owner=owner))
        until(lambda: [p for p in get_json(kube, "pods")["items"] if p["status"]["phase"] == "Running"])
        kube.kubectl("delete", "ltr", "run")
        assert not get_json(kube, "jobs")["items"]
        until(lambda: not get_json(kube, "pods")["items"])
    assert "No resources found" in kube.kubectl("get", "jobs,pods").stderr


def test_logs_of_a_master_pod_through_kubectl_and_the_client(kube: Cluster) -> None:
    """The emulator serves pods/log from the stand-in kubelet while the stand-ins run."""
    api_client = kube.api_client()
    body = job(workers=0)
    body["metadata"] = {"name": "j", "namespace": "default"}
    body["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["image"] = (
        "alpine:3.10"
    )
    lines = "".join(f"epoch {i}\n" for i in range(1, 6))
    runtime = ScriptedRuntime(api_client, lambda kind, obj: None, log=lambda kind, obj: lines)
    with StandIns(api_client, runtime):
        client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            "kubeflow.org", "v1", "default", "pytorchjobs", body
        )
        core = client.CoreV1Api(api_client)
        until(lambda: kube.kubectl("logs", "j-master-0", "-c", "pytorch", check=False).stdout == lines)
        assert core.read_namespaced_pod_log("j-master-0", "default", container="pytorch", tail_lines=2) == (
            "epoch 4\nepoch 5\n"
        )
        assert kube.kubectl("logs", "j-master-0", "-c", "pytorch", "--tail", "1").stdout == "epoch 5\n"
    assert kube.api.container_logs is None  # unset when the stand-ins stop
    assert core.read_namespaced_pod_log("j-master-0", "default", container="pytorch") == ""


# -- Secrets and ConfigMaps in a container's environment ----------------------------------------

AWS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s3cr3t/+=="}


def create_secret(kube: Cluster, name: str, **literals: str) -> None:
    """`kubectl create secret generic NAME --from-literal=K=V`, sent as JSON.

    kubectl's own `create secret` posts protobuf, which the emulator answers with 415 (as it
    does `kubectl create namespace`); the same object through `--dry-run=client -o json |
    kubectl create -f -` is what the server would store (base64 `data`, type Opaque)."""
    flags = [f"--from-literal={key}={value}" for key, value in literals.items()]
    manifest = kube.kubectl("create", "secret", "generic", name, *flags, "--dry-run=client", "-o", "json")
    kube.kubectl("create", "-f", "-", input=manifest.stdout)


@dataclass
class RecordingRuntime(ScriptedRuntime):
    """A ScriptedRuntime that keeps the environment the kubelet gave each started container."""

    environments: dict[str, dict[str, str]] = field(default_factory=dict)

    def start(self, launch: Launch) -> None:
        self.environments[launch.container["name"]] = dict(launch.env)
        super().start(launch)


def env_pod(container: dict[str, Any]) -> str:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "alpine:3.10", "command": ["true"], **container}],
        },
    }
    return json.dumps(pod)


def container_state(kube: Cluster) -> dict[str, Any] | None:
    statuses = get_json(kube, "pod", "p").get("status", {}).get("containerStatuses") or []
    return statuses[0]["state"] if statuses else None


def test_a_missing_secret_holds_the_container_until_it_is_created(kube: Cluster) -> None:
    """makeEnvironmentVariables → the secret manager's NotFound; the next sync retries."""
    api_client = kube.api_client()
    runtime = RecordingRuntime(api_client, lambda kind, obj: None)
    with StandIns(api_client, runtime) as cluster:
        kube.kubectl("create", "-f", "-", input=env_pod({"envFrom": [{"secretRef": {"name": "aws"}}]}))
        state = until(lambda: (s := container_state(kube)) and "waiting" in s and s)
        assert state["waiting"] == {
            "reason": "CreateContainerConfigError",
            "message": 'secret "aws" not found',
        }
        time.sleep(0.5)  # a few syncs later it still waits, and the pod is Pending
        assert get_json(kube, "pod", "p")["status"]["phase"] == "Pending" and not runtime.environments
        assert ("p", "Failed", 'Error: secret "aws" not found') in cluster.events()
        create_secret(kube, "aws", **AWS)
        until(lambda: get_json(kube, "pod", "p")["status"]["phase"] == "Running")
    assert {k: runtime.environments["c"][k] for k in AWS} == AWS  # base64-decoded


def test_optional_sources_prefix_and_env_over_env_from(kube: Cluster) -> None:
    api_client = kube.api_client()
    runtime = RecordingRuntime(api_client, lambda kind, obj: None)
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg"},
        "data": {"REGION": "eu", "1x": "y"},
    }
    kube.kubectl("create", "-f", "-", input=json.dumps(config))
    create_secret(kube, "aws", **AWS)
    container = {
        "envFrom": [
            {"secretRef": {"name": "gone", "optional": True}},
            {"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
            {"secretRef": {"name": "aws"}},
            {"configMapRef": {"name": "cfg"}},
        ],
        "env": [
            {"name": "AWS_ACCESS_KEY_ID", "value": "from-env"},
            {"name": "WHERE", "value": "$(REGION)-$(CFG_REGION)-$(NOPE)"},
            {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "aws", "key": "AWS_SECRET_ACCESS_KEY"}}},
            {"name": "R", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "REGION"}}},
            {
                "name": "OPT_KEY",
                "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "x", "optional": True}},
            },
            {
                "name": "OPT_OBJ",
                "valueFrom": {"secretKeyRef": {"name": "gone", "key": "x", "optional": True}},
            },
        ],
    }
    with StandIns(api_client, runtime):
        kube.kubectl("create", "-f", "-", input=env_pod(container))
        until(lambda: get_json(kube, "pod", "p")["status"]["phase"] == "Running")
    env = runtime.environments["c"]
    assert env["CFG_REGION"] == "eu" and env["REGION"] == "eu"
    assert (
        env["1x"] == "y" and env["CFG_1x"] == "y"
    )  # 1.32 skips no key (RelaxedEnvironmentVariableValidation)
    assert env["AWS_ACCESS_KEY_ID"] == "from-env"  # env replaces envFrom
    assert env["AWS_SECRET_ACCESS_KEY"] == AWS["AWS_SECRET_ACCESS_KEY"]
    assert env["WHERE"] == "eu-eu-$(NOPE)"
    assert (env["KEY"], env["R"]) == (AWS["AWS_SECRET_ACCESS_KEY"], "eu")
    assert "OPT_KEY" not in env and "OPT_OBJ" not in env


@pytest.mark.parametrize(
    ("value_from", "message"),
    [
        ({"secretKeyRef": {"name": "aws", "key": "TOKEN"}}, "couldn't find key TOKEN in Secret default/aws"),
        ({"configMapKeyRef": {"name": "cfg", "key": "A"}}, 'configmap "cfg" not found'),
    ],
)
def test_a_missing_key_or_config_map_is_a_config_error(
    kube: Cluster, value_from: dict[str, Any], message: str
) -> None:
    api_client = kube.api_client()
    create_secret(kube, "aws", **AWS)
    with StandIns(api_client, RecordingRuntime(api_client, lambda kind, obj: None)) as cluster:
        kube.kubectl("create", "-f", "-", input=env_pod({"env": [{"name": "V", "valueFrom": value_from}]}))
        state = until(lambda: (s := container_state(kube)) and "waiting" in s and s)
        events = cluster.events()
    assert state["waiting"] == {"reason": "CreateContainerConfigError", "message": message}
    assert ("p", "Failed", f"Error: {message}") in events


@pytest.mark.skipif(bool(usable_by_other_users()), reason=usable_by_other_users() or "")
def test_a_jobs_process_sees_the_secret_of_its_env_from(kube: Cluster) -> None:
    """The export Job's shape: envFrom a Secret; the real process prints what it was given."""
    api_client = kube.api_client()
    create_secret(kube, "s3-credentials", **AWS)
    body = batch_job()
    (container,) = body["spec"]["template"]["spec"]["containers"]
    container.update(
        image=defaults.TRAINER_IMAGE,
        command=["python", "-c", "import os; print(os.environ['AWS_ACCESS_KEY_ID'])"],
        envFrom=[{"secretRef": {"name": "s3-credentials"}}],
    )
    with StandIns(api_client, ProcessRuntime()):
        client.BatchV1Api(api_client).create_namespaced_job("default", body)
        job = finished_job(kube)
        (pod,) = get_json(kube, "pods")["items"]
        logs = kube.kubectl("logs", pod["metadata"]["name"]).stdout
    assert [c["type"] for c in job["status"]["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    assert logs == "AKIAEXAMPLE\n"
