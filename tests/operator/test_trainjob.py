"""Levels as Kubeflow Trainer v2 TrainJobs (spec.resources.trainingApi, chart value
workloads.trainingApi), with the real operator process on the Trainer v2, JobSet, Job
controller, Kueue and kubelet stand-ins (tests/standins/trainer_v2.py)."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client

from lth.cluster.children import objects
from tests.kube.cluster import Cluster
from tests.operator.helpers import (
    Script,
    chart_training_runtime,
    controllers,
    get_run,
    run_manifest,
    wait_for_phase,
)
from tests.operator.plugin import Operator
from tests.operator.test_locked_down import local_queue
from tests.operator.test_operator import apply
from tests.operator.test_upstream import progressing_for, wait_for
from tests.standins import kueue

TRAINJOB = objects.CHILD_RESOURCES["TrainJob"]
PYTORCH = objects.CHILD_RESOURCES["PyTorchJob"]


def listed(kube: Cluster, resource: tuple[str, str, str]) -> dict[str, dict[str, Any]]:
    group, version, plural = resource
    items = client.CustomObjectsApi(kube.api_client()).list_namespaced_custom_object(
        group, version, "default", plural
    )["items"]
    return {obj["metadata"]["name"]: obj for obj in items}


def pods_of(kube: Cluster, trainjob: str) -> list[dict[str, Any]]:
    listed_pods = client.CoreV1Api(kube.api_client()).list_namespaced_pod(
        "default", label_selector=f"jobset.sigs.k8s.io/jobset-name={trainjob}", _preload_content=False
    )
    return list(json.loads(listed_pods.data)["items"])


def test_a_cluster_on_trainer_v2_runs_every_level_as_a_trainjob_admitted_by_kueue(
    kube: Cluster, operator: Operator
) -> None:
    """The chart's workloads.trainingApi TrainJob and its ClusterTrainingRuntime, Kueue v0.19 as
    installed (TrainJobs managed by default): the same rows as the PyTorchJob path."""
    kube.add(chart_training_runtime({"trainingApi": "TrainJob"}))
    operator.kill()
    operator.env["LTH_WORKLOAD_DEFAULTS"] = json.dumps({"trainingApi": "TrainJob"})
    operator.start()
    scores = {0: 76.0, 1: 75.6, 2: 74.0}
    script = Script(top1=lambda run, level, branch: scores[level] if branch == "main" else 61.0)
    manifest = run_manifest(
        "v2",
        levels=2,
        resources={"pods": 2, "queueName": "team-a"},
        pruning={"controls": {"branches": ["random-reinit"], "levels": [2]}},
    )
    with controllers(kube, script, kueue=kueue.FRAMEWORKS_V0_19):
        local_queue(kube, "team-a")
        apply(kube, manifest)
        run = wait_for_phase(kube, "v2", {"Succeeded", "Failed"}, timeout=90, operator=operator)
        trainjobs = listed(kube, TRAINJOB)
        level_pods = pods_of(kube, "v2-level-01")
        workloads = client.CustomObjectsApi(kube.api_client()).list_namespaced_custom_object(
            kueue.GROUP, kueue.VERSION, "default", "workloads"
        )["items"]
    status = run["status"]
    assert status["phase"] == "Succeeded", status
    assert [(row["level"], row["branch"], row["top1"]) for row in status["levels"]] == [
        (0, "main", 76.0),
        (1, "main", 75.6),
        (2, "main", 74.0),
        (2, "random-reinit", 61.0),
    ]
    assert status["best"]["level"] == 1
    assert status["acceptedSpec"]["resources"]["trainingApi"] == "TrainJob"  # the chart's, kept
    assert sorted(trainjobs) == ["v2-level-00", "v2-level-01", "v2-level-02", "v2-level-02-reinit"]
    assert listed(kube, PYTORCH) == {}
    job = trainjobs["v2-level-01"]
    assert job["metadata"]["labels"][objects.LABEL_KUEUE_QUEUE] == "team-a"
    managers = [patch["manager"] for patch in job["spec"]["runtimePatches"]]
    assert managers == ["lth.dev/operator", "kueue.x-k8s.io/manager"]  # Kueue's patch left in place
    assert all(c["status"] == "False" for c in job["status"]["conditions"] if c["type"] == "Suspended")
    assert len(level_pods) == 2
    for pod in level_pods:  # our patch and Kueue's both reached the pods
        assert pod["metadata"]["labels"][objects.LABEL_RUN] == "v2"
        assert pod["metadata"]["labels"]["kueue.x-k8s.io/podset"] == "node"
        assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    assert {w["metadata"]["ownerReferences"][0]["kind"] for w in workloads} >= {"TrainJob"}


def test_a_missing_runtime_is_explained_and_the_run_goes_on_once_it_is_installed(
    kube: Cluster, operator: Operator
) -> None:
    operator.resync_every(1)
    with controllers(kube, Script()) as standins:
        apply(kube, run_manifest("noruntime", levels=0, resources={"trainingApi": "TrainJob"}))
        refused = wait_for(lambda: progressing_for(kube, "noruntime", "RuntimeMissing"), operator=operator)
        # A Trainer whose webhook does not check (or a runtime deleted after the create): the
        # TrainJob is made, and only Trainer's event says why it never runs.
        kube.api.validating.remove(standins.trainer.validate)
        said = wait_for(
            lambda: (
                (found := progressing_for(kube, "noruntime", "RuntimeMissing"))
                and "reconciliation failed" in found["message"]
                and found
            ),
            operator=operator,
        )
        row = get_run(kube, "noruntime")["status"]["levels"][0]
        kube.add(chart_training_runtime())
        run = wait_for_phase(kube, "noruntime", {"Succeeded", "Failed"}, timeout=60, operator=operator)
    assert refused["message"].startswith(
        "TrainJob noruntime-level-00: RuntimeMissing: create refused: admission webhook "
        '"validator.trainjob.trainer.kubeflow.org" denied the request: spec.RuntimeRef: Invalid value: '
    )
    assert (
        "specified clusterTrainingRuntime must be created before the TrainJob is created"
        in refused["message"]
    )
    assert "install the ClusterTrainingRuntime 'lth-torch'" in refused["message"]
    assert "trainingRuntime.create=true" in refused["message"]
    assert said["message"].startswith(
        "TrainJob noruntime-level-00: RuntimeMissing: TrainJob resources reconciliation failed: "
        "not found ClusterTrainingRuntime specified in TrainJob: "
        'clustertrainingruntimes.trainer.kubeflow.org "lth-torch" not found'
    )
    assert row["phase"] == "Pending" and row["attempts"] == 1
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert run["status"]["levels"][0]["attempts"] == 1


def test_a_failed_nodes_own_words_reach_the_status_and_the_planner_retries_the_trainjob(
    kube: Cluster, operator: Operator
) -> None:
    kube.add(chart_training_runtime())
    message = "node 1: NCCL error: unhandled system error, NCCL version 2.27.3"
    script = Script(ticks=6, node_fail={"nodefail-level-00": (1, message)})
    with controllers(kube, script):
        apply(
            kube,
            run_manifest(
                "nodefail",
                levels=0,
                resources={"trainingApi": "TrainJob", "pods": 2},
                retry={"training": {"backoffLimit": 1}},
            ),
        )
        run = wait_for_phase(kube, "nodefail", {"Succeeded", "Failed"}, timeout=60, operator=operator)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    (row,) = run["status"]["levels"]
    assert row["attempts"] == 2 and len(script.uids["nodefail-level-00"]) == 2
    events = client.CoreV1Api(kube.api_client()).list_namespaced_event("default").items
    retrying = [e.message for e in events if e.reason == "Retrying" and e.involved_object.name == "nodefail"]
    assert retrying and retrying[0].startswith("TrainJob nodefail-level-00 attempt 1 failed: ")
    assert (
        "jobset failed due to one or more job failures (first failed job: nodefail-level-00-node-0)"
        in retrying[0]
    )
    assert retrying[0].endswith(message + "; retrying (1 of 1 retries)")


def test_an_operator_restarted_mid_level_adopts_its_trainjob_and_reads_its_progress(
    kube: Cluster, operator: Operator
) -> None:
    kube.add(chart_training_runtime())
    operator.resync_every(1)
    script = Script(hold={"resume-level-00"}, epochs=4)
    with controllers(kube, script):
        apply(kube, run_manifest("resume", levels=1, resources={"trainingApi": "TrainJob", "pods": 2}))
        running = wait_for(
            lambda: (
                (rows := get_run(kube, "resume").get("status", {}).get("levels"))
                and rows[0].get("progress")
                and rows[0]
            ),
            operator=operator,
        )
        operator.kill()
        script.hold.clear()  # the level ends while no operator runs
        wait_for(
            lambda: any(
                c["type"] == "Complete"
                for c in listed(kube, TRAINJOB)["resume-level-00"].get("status", {}).get("conditions", [])
            )
        )
        operator.start()
        run = wait_for_phase(kube, "resume", {"Succeeded", "Failed"}, timeout=60, operator=operator)
    assert running["phase"] == "Running" and running["progress"]["epochs"] == 4
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert all(len(uids) == 1 for uids in script.uids.values()), script.uids  # nothing made twice
    assert [row["top1"] for row in run["status"]["levels"]] == [76.0, 76.0]
