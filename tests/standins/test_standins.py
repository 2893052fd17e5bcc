"""The stand-ins against the upstream facts they cite (shared/upstream-behaviour.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.kube.cluster import Cluster
from tests.standins import Cluster as StandIns
from tests.standins import Finished, ScriptedRuntime
from tests.standins.images import Image
from tests.standins.kubelet import ContainerConfigError, verify_run_as_non_root
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
