"""The Trainer v2 and JobSet stand-ins against the upstream facts they cite (shared/trainer-v2.md)."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from lth.api import defaults
from tests.kube.cluster import Cluster
from tests.operator.helpers import chart_training_runtime
from tests.standins import Cluster as StandIns
from tests.standins import Finished, ScriptedRuntime
from tests.standins.trainer_v2 import TrainerV2, strategic_merge

TRAINJOBS = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")


def trainjob(name: str = "tj", nodes: int = 2, runtime: str = "lth-torch", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "runtimeRef": {"name": runtime},
            "trainer": {
                "image": defaults.TRAINER_IMAGE,
                "command": ["torchrun", "-m", "x"],
                "numNodes": nodes,
                "numProcPerNode": 2,
                "resourcesPerNode": {"requests": {"cpu": "2", "memory": "1Gi"}},
            },
            **spec,
        },
    }


def wait(predicate: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("timed out")


def pods(kube: Cluster, selector: str) -> list[dict[str, Any]]:
    core = client.CoreV1Api(kube.api_client())
    listed = core.list_namespaced_pod("default", label_selector=selector, _preload_content=False)
    return sorted(json.loads(listed.data)["items"], key=lambda p: p["metadata"]["name"])


def get(kube: Cluster, name: str = "tj") -> dict[str, Any]:
    custom = client.CustomObjectsApi(kube.api_client())
    return custom.get_namespaced_custom_object(*TRAINJOBS[:2], "default", TRAINJOBS[2], name)  # type: ignore[no-any-return]


def conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {
        c["type"]: (c["status"], c["reason"], c["message"])
        for c in (obj.get("status") or {}).get("conditions") or []
    }


def test_runtime_patches_merge_by_the_keys_of_the_go_types() -> None:
    base = {"replicatedJobs": [{"name": "node", "template": {"spec": {"template": {"spec": {
        "containers": [{"name": "node", "image": "i", "volumeMounts": [{"name": "a", "mountPath": "/a"}]}],
        "tolerations": [{"key": "x"}]}}}}}]}  # fmt: skip
    patch = {"replicatedJobs": [{"name": "node", "template": {"spec": {"template": {"spec": {
        "containers": [{"name": "node", "volumeMounts": [{"name": "b", "mountPath": "/b"}]}],
        "tolerations": [{"key": "y"}]}}}}}]}  # fmt: skip
    merged = strategic_merge(base, patch)["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    (container,) = merged["containers"]
    assert container["image"] == "i"  # kept: the runtime's container, patched by name
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/a", "/b"]
    assert merged["tolerations"] == [{"key": "y"}]  # no patch strategy: replaced


def test_a_trainjob_runs_as_one_indexed_job_with_the_pet_environment(kube: Cluster) -> None:
    kube.add(chart_training_runtime())
    done: set[str] = set()

    def workload(kind: str, obj: dict[str, Any]) -> Finished | None:
        return (
            Finished(True, termination_message="{}")
            if kind == "TrainJob" and obj["metadata"]["name"] in done
            else None
        )

    runtime = ScriptedRuntime(kube.api_client(), workload)
    with StandIns(kube.api_client(), runtime, tick=0.05):
        kube.add(trainjob())
        node = wait(
            lambda: (
                len(pods(kube, "jobset.sigs.k8s.io/jobset-name=tj")) == 2
                and pods(kube, "jobset.sigs.k8s.io/jobset-name=tj")
            )
        )
        names = [p["metadata"]["name"] for p in node]
        assert all(
            n.startswith(f"tj-node-0-{i}-") and len(n) == len("tj-node-0-0-abcde")
            for i, n in enumerate(names)
        )
        first = node[0]
        assert (first["spec"]["hostname"], first["spec"]["subdomain"]) == ("tj-node-0-0", "tj")
        assert first["spec"]["restartPolicy"] == "Never"  # the chart's runtime, not JobSet's OnFailure
        (container,) = first["spec"]["containers"]
        env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
        assert env["PET_NNODES"] == "2" and env["PET_NPROC_PER_NODE"] == "2"
        assert env["PET_MASTER_ADDR"] == "tj-node-0-0.tj" and env["PET_MASTER_PORT"] == "29500"
        assert env["PET_NODE_RANK"] == {
            "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
        }
        assert not {"MASTER_ADDR", "RANK", "WORLD_SIZE"} & set(env)
        assert container["resources"]["requests"] == {"cpu": "2", "memory": "1Gi"}
        core = client.CoreV1Api(kube.api_client())
        service = core.read_namespaced_service("tj", "default")
        assert service.spec.cluster_ip == "None" and service.spec.selector == {
            "jobset.sigs.k8s.io/jobset-name": "tj"
        }
        running = wait(lambda: (get(kube).get("status") or {}).get("jobsStatus") and get(kube))
        assert running["status"]["jobsStatus"][0]["name"] == "node"
        assert "Complete" not in conditions(running) and set(conditions(running)) <= {"Suspended"}
        done.add("tj")
        finished = wait(lambda: "Complete" in conditions(get(kube)) and get(kube))
        assert conditions(finished)["Complete"] == (
            "True",
            "AllJobsCompleted",
            "jobset completed successfully",
        )
        assert finished["status"]["jobsStatus"][0]["succeeded"] == 1  # Jobs, not pods
        assert [p["status"]["phase"] for p in pods(kube, "jobset.sigs.k8s.io/jobset-name=tj")] == [
            "Succeeded"
        ] * 2


def test_a_failed_node_fails_the_trainjob_and_keeps_its_pod(kube: Cluster) -> None:
    kube.add(chart_training_runtime())
    runtime = ScriptedRuntime(
        kube.api_client(),
        lambda kind, obj: None,
        node=lambda obj, index: Finished(False, "Error", "node 1: CUDA error: out of memory"),
    )
    with StandIns(kube.api_client(), runtime, tick=0.05):
        kube.add(trainjob())
        failed = wait(lambda: "Failed" in conditions(get(kube)) and get(kube))
        value, reason, message = conditions(failed)["Failed"]
        assert (value, reason) == ("True", "FailedJobs") and message.endswith("(first failed job: tj-node-0)")
        node1 = wait(
            lambda: [
                p
                for p in pods(kube, "batch.kubernetes.io/job-completion-index=1")
                if p["status"].get("phase") == "Failed"
            ]
        )
        (state,) = node1[0]["status"]["containerStatuses"]
        assert state["state"]["terminated"]["message"] == "node 1: CUDA error: out of memory"


def test_a_missing_runtime_is_refused_by_the_webhook_and_else_only_an_event(kube: Cluster) -> None:
    runtime = ScriptedRuntime(kube.api_client(), lambda kind, obj: None)
    custom = client.CustomObjectsApi(kube.api_client())
    with StandIns(kube.api_client(), runtime, tick=0.05) as standins:
        with pytest.raises(client.ApiException) as refused:
            custom.create_namespaced_custom_object(*TRAINJOBS[:2], "default", TRAINJOBS[2], trainjob())
        assert refused.value.status == 403
        message = json.loads(refused.value.body)["message"]
        assert message.startswith(
            'admission webhook "validator.trainjob.trainer.kubeflow.org" denied the request: '
            'spec.RuntimeRef: Invalid value: v1alpha1.RuntimeRef{Name:"lth-torch"'
        )
        assert message.endswith(
            'clustertrainingruntimes.trainer.kubeflow.org "lth-torch" not found: '
            "specified clusterTrainingRuntime must be created before the TrainJob is created"
        )
        reserved = trainjob(name="pet")
        reserved["spec"]["trainer"]["env"] = [{"name": "PET_NNODES", "value": "3"}]
        kube.add(chart_training_runtime())
        with pytest.raises(client.ApiException) as refused:
            custom.create_namespaced_custom_object(*TRAINJOBS[:2], "default", TRAINJOBS[2], reserved)
        assert (
            "must not have reserved envs, invalid envs configured: [PET_NNODES]"
            in json.loads(refused.value.body)["message"]
        )
        # A runtime gone after the TrainJob was admitted: Trainer says so only in an event.
        standins._server.validating.remove(standins.trainer.validate)  # type: ignore[union-attr]
        kube.add(trainjob(name="orphan", runtime="gone"))
        core = client.CoreV1Api(kube.api_client())
        events = wait(
            lambda: core.list_namespaced_event("default", field_selector="involvedObject.name=orphan").items
        )
        (event,) = events
        assert (event.type, event.reason, event.action) == (
            "Warning",
            "TrainJobResourcesCreationFailed",
            "Reconciling",
        )
        assert event.message == (
            "TrainJob resources reconciliation failed: not found ClusterTrainingRuntime specified in "
            'TrainJob: clustertrainingruntimes.trainer.kubeflow.org "gone" not found'
        )
        assert event.event_time is not None and event.last_timestamp is None
        assert "conditions" not in (get(kube, "orphan").get("status") or {})  # no Failed, no Created


def test_a_suspended_trainjob_builds_a_suspended_jobset_and_resumes_it(kube: Cluster) -> None:
    kube.add(chart_training_runtime())
    runtime = ScriptedRuntime(kube.api_client(), lambda kind, obj: None)
    custom = client.CustomObjectsApi(kube.api_client())
    with StandIns(kube.api_client(), runtime, tick=0.05):
        kube.add(trainjob(suspend=True))
        suspended = wait(lambda: "Suspended" in conditions(get(kube)) and get(kube))
        assert conditions(suspended)["Suspended"] == ("True", "Suspended", "TrainJob is suspended")
        jobs = client.BatchV1Api(kube.api_client())
        job = wait(lambda: jobs.list_namespaced_job("default").items)
        assert job[0].spec.suspend is True and pods(kube, "jobset.sigs.k8s.io/jobset-name=tj") == []
        custom.patch_namespaced_custom_object(
            *TRAINJOBS[:2], "default", TRAINJOBS[2], "tj", {"spec": {"suspend": False}}
        )
        wait(lambda: len(pods(kube, "jobset.sigs.k8s.io/jobset-name=tj")) == 2)
        assert conditions(get(kube))["Suspended"] == ("False", "Resumed", "TrainJob is resumed")


def test_jobset_refuses_names_whose_pods_would_pass_63_characters() -> None:
    runtime = chart_training_runtime()
    long = trainjob(name="a" * 49, nodes=2)
    jobset = TrainerV2.build_jobset(
        {**copy.deepcopy(long), "metadata": {**long["metadata"], "uid": "u"}}, runtime
    )
    jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["completionMode"] = "Indexed"
    from tests.standins.jobset import longest_pod_name

    assert (
        longest_pod_name(jobset)
        and "pod names generated for this JobSet will exceed 63" in longest_pod_name(jobset)[0]
    )
    short = trainjob(name="a" * 48, nodes=2)  # a-x48-node-0-1-abcde: 63
    jobset = TrainerV2.build_jobset({**short, "metadata": {**short["metadata"], "uid": "u"}}, runtime)
    jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["completionMode"] = "Indexed"
    assert longest_pod_name(jobset) == []
