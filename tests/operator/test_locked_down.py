"""A locked-down cluster: Pod Security, Kueue as installed today, quotas and refused creates, each
met or explained in the run's status, on the stand-ins (tests/standins: pod_security,
resource_quota, kueue), with the real operator process.

Each test here failed on the operator before issue 24: the restricted namespace's refused
worker left the run "Training" without a word (the training operator's FailedCreatePod event
was never read); the Spark pods without the webhook were refused, retried and failed without
the fix; a queue Kueue does not manage said "waiting for the queue"; a quota or a webhook
refusing a child made kopf retry the create for ever, with no condition.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client

from tests.kube.cluster import Cluster
from tests.operator.helpers import Script, controllers, get_run, run_manifest, wait_for_phase
from tests.operator.plugin import Operator
from tests.operator.test_operator import apply
from tests.operator.test_upstream import progressing_for, wait_for
from tests.standins import kueue

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


def label_namespace(kube: Cluster, labels: dict[str, str]) -> None:
    client.CoreV1Api(kube.api_client()).patch_namespace("default", {"metadata": {"labels": labels}})


def condition(kube: Cluster, name: str, type_: str) -> dict[str, Any]:
    conditions = get_run(kube, name).get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == type_), {})


def test_a_restricted_namespace_is_named_up_front_and_its_refused_worker_explained(
    kube: Cluster, operator: Operator
) -> None:
    label_namespace(kube, RESTRICTED)
    operator.resync_every(2)
    with controllers(kube, Script(ticks=4)):
        apply(kube, run_manifest("locked", resources={"pods": 2}))
        refused = wait_for(lambda: progressing_for(kube, "locked", "PodRefused"), operator=operator)
        admissible = condition(kube, "locked", "PodsAdmissible")
        status = get_run(kube, "locked")["status"]
    assert (admissible["status"], admissible["reason"]) == ("False", "PodSecurityRefuses")
    assert (
        "init-pytorch" in admissible["message"]
        and "--pytorch-init-container-template-file" in admissible["message"]
    )
    message = refused["message"]
    assert message.startswith("PyTorchJob locked-level-00: PodRefused: ")
    assert (
        'pods "locked-level-00-worker-0" is forbidden: violates PodSecurity "restricted:latest": ' in message
    )
    assert 'container "init-pytorch" must set securityContext.allowPrivilegeEscalation=false' in message
    assert "fixes: label the namespace pod-security.kubernetes.io/enforce=baseline" in message
    assert status["preprocessing"]["phase"] == "Succeeded"  # the Spark driver, from its pod template, passed
    assert status["phase"] == "Training"


def test_spark_pods_that_only_a_webhook_would_secure_fail_once_with_the_fix(
    kube: Cluster, operator: Operator
) -> None:
    label_namespace(kube, RESTRICTED)
    operator.kill()
    operator.env["LTH_WORKLOAD_DEFAULTS"] = json.dumps({"sparkPodTemplates": False})
    operator.start()
    with controllers(kube, Script(), spark_webhook=False):
        apply(kube, run_manifest("nowebhook"))
        run = wait_for_phase(kube, "nowebhook", {"Failed"}, operator=operator)
    failed = next(c for c in run["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PreprocessingFailed"
    assert "failed on its input (not retried)" in failed["message"]
    assert 'violates PodSecurity "restricted:latest"' in failed["message"]
    assert "workloads.sparkPodTemplates true" in failed["message"]
    assert run["status"]["preprocessing"]["attempts"] == 1
    admissible = next(c for c in run["status"]["conditions"] if c["type"] == "PodsAdmissible")
    assert "Spark driver" in admissible["message"]  # said up front too


def exported(kube: Cluster, name: str) -> dict[str, Any]:
    """The run once it ended and its export did; empty before."""
    run = get_run(kube, name)
    export = run.get("status", {}).get("export") or {}
    ended = run.get("status", {}).get("phase") in ("Succeeded", "Failed")
    return run if ended and export.get("phase") in ("Succeeded", "Failed") else {}


def local_queue(kube: Cluster, name: str) -> None:
    kube.add(
        {
            "apiVersion": f"{kueue.GROUP}/{kueue.VERSION}",
            "kind": "LocalQueue",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterQueue": "cluster-queue"},
        }
    )


def test_kueue_as_installed_today_does_not_manage_pytorchjobs_and_the_run_says_so(
    kube: Cluster, operator: Operator
) -> None:
    operator.kill()
    operator.env["LTH_NO_WORKLOAD_GRACE_SECONDS"] = "2"
    operator.resync_every(2)
    with controllers(kube, Script(), kueue=kueue.FRAMEWORKS_V0_19):
        local_queue(kube, "team-a")
        apply(kube, run_manifest("queued", resources={"queueName": "team-a"}))
        stuck = wait_for(lambda: progressing_for(kube, "queued", "NotManagedByKueue"), operator=operator)
        status = get_run(kube, "queued")["status"]
    assert "Kueue does not manage kubeflow.org/pytorchjob" in stuck["message"]
    assert (
        "off by default since Kueue v0.19" in stuck["message"] and "trainingApi: TrainJob" in stuck["message"]
    )
    # The SparkApplication's pods carry the queue, so Kueue's pod integration admitted the driver.
    assert status["preprocessing"]["phase"] == "Succeeded"


def test_a_kueue_that_manages_every_child_admits_them_all_through_the_runs_queue(
    kube: Cluster, operator: Operator
) -> None:
    """manageJobsWithoutQueueName suspends any Job and gates any pod: the export Job and the
    Spark driver would wait for ever without the run's queue label."""
    frameworks = (*kueue.FRAMEWORKS_V0_19, "kubeflow.org/pytorchjob")
    with controllers(kube, Script(), kueue=frameworks, manage_jobs_without_queue_name=True):
        local_queue(kube, "team-a")
        apply(kube, run_manifest("admitted", levels=1, resources={"queueName": "team-a"}))
        run = wait_for(lambda: exported(kube, "admitted"), timeout=90, operator=operator)
        workloads = client.CustomObjectsApi(kube.api_client()).list_namespaced_custom_object(
            kueue.GROUP, kueue.VERSION, "default", "workloads"
        )["items"]
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert run["status"]["export"]["phase"] == "Succeeded"
    owners = {w["metadata"]["ownerReferences"][0]["kind"] for w in workloads}
    assert owners == {"Pod", "PyTorchJob", "Job"}  # the driver, the levels, the export


def test_a_quota_refusal_is_retried_and_said_and_the_run_goes_on_once_it_fits(
    kube: Cluster, operator: Operator
) -> None:
    kube.add(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "jobs", "namespace": "default"},
            "spec": {"hard": {"count/pytorchjobs.kubeflow.org": "0"}},
        }
    )
    operator.resync_every(2)
    with controllers(kube, Script()):
        apply(kube, run_manifest("quota", levels=0))
        refused = wait_for(lambda: progressing_for(kube, "quota", "QuotaExceeded"), operator=operator)
        row = get_run(kube, "quota")["status"]["levels"][0]
        client.CoreV1Api(kube.api_client()).patch_namespaced_resource_quota(
            "jobs", "default", {"spec": {"hard": {"count/pytorchjobs.kubeflow.org": "5"}}}
        )
        run = wait_for_phase(kube, "quota", {"Succeeded", "Failed"}, timeout=60, operator=operator)
    assert (
        'pytorchjobs.kubeflow.org "quota-level-00" is forbidden: exceeded quota: jobs' in refused["message"]
    )
    assert "limited: count/pytorchjobs.kubeflow.org=0" in refused["message"]
    assert (row["phase"], row["attempts"]) == ("Retrying", 1)
    assert run["status"]["phase"] == "Succeeded"
    assert run["status"]["levels"][0]["attempts"] == 1  # the create was refused, never a failed attempt


def test_a_create_a_webhook_denies_fails_the_run_naming_the_child_and_the_servers_words(
    kube: Cluster, operator: Operator
) -> None:
    def deny_gpu_jobs(server: Any, kind: Any, obj: dict[str, Any]) -> None:
        from tests.kube import emulator

        if kind.plural == "pytorchjobs":
            raise emulator.refused(
                403,
                "Forbidden",
                'admission webhook "policy.example.com" denied the request: team-a may not train',
            )

    with controllers(kube, Script()):
        kube.api.validating.append(deny_gpu_jobs)
        apply(kube, run_manifest("denied"))
        run = wait_for_phase(kube, "denied", {"Failed"}, operator=operator)
    failed = next(c for c in run["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "ChildRefused"
    assert failed["message"] == (
        "PyTorchJob denied-level-00 was refused by the API server: 403 admission webhook "
        '"policy.example.com" denied the request: team-a may not train'
    )
