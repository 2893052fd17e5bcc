"""First contact with upstream: what the real training operator, Spark operator and kubelet
do to our children (the stand-ins in tests/standins, written from their source).

Each test here failed on the operator as it was before the cluster-path fixes:
- a worker pod's injected init container (alpine, root) was refused by runAsNonRoot;
- the SparkApplication that failed on bad input was retried, and its reason lost;
- a never-pushed image, a GPU the node lacks or a Kueue queue left a run "Training"
  without a word about why.
(The failed master pod deleted before Failed under backoffLimit 0, kubeflow/trainer
issue 3419, is test_operator's bad-input test: its message comes from that pod.)
"""

from __future__ import annotations

import time
from typing import Any

from lth.api import defaults
from tests.kube.cluster import Cluster
from tests.operator.helpers import Script, controllers, get_run, run_manifest, wait_for_phase
from tests.operator.plugin import Operator
from tests.operator.test_operator import apply, children, events
from tests.standins.images import catalog


def wait_for(what: Any, timeout: float = 40, operator: Operator | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = what()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; operator log:\n{operator.output()[-3000:] if operator else ''}")
        time.sleep(0.2)


def progressing(kube: Cluster, name: str) -> dict[str, Any]:
    conditions = get_run(kube, name).get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == "Progressing"), {})


def progressing_for(kube: Cluster, name: str, reason: str) -> dict[str, Any]:
    """The Progressing condition once it has this reason; empty before."""
    condition = progressing(kube, name)
    return condition if condition.get("reason") == reason else {}


def test_worker_pods_pass_the_kubelets_non_root_check(kube: Cluster, operator: Operator) -> None:
    """The training operator's init-pytorch (alpine:3.10, no USER, no securityContext) runs as the
    pods' runAsUser: runAsNonRoot alone made the kubelet refuse it (CreateContainerConfigError)."""
    with controllers(kube, Script(ticks=25)) as cluster:
        apply(kube, run_manifest("pair", levels=0, resources={"pods": 2}))

        def worker_init() -> dict[str, Any] | None:
            try:
                pod = cluster.pod("pair-level-00-worker-0")
            except Exception:
                return None
            statuses = pod.get("status", {}).get("initContainerStatuses") or []
            state = statuses[0]["state"] if statuses else {}
            return pod if "terminated" in state or "waiting" in state else None

        pod = wait_for(worker_init, timeout=60, operator=operator)
        run = wait_for_phase(kube, "pair", {"Succeeded", "Failed"}, timeout=60, operator=operator)
    init = pod["status"]["initContainerStatuses"][0]
    assert init["name"] == "init-pytorch" and init["image"] == "alpine:3.10"
    assert init["state"].get("terminated", {}).get("exitCode") == 0, init["state"]
    assert pod["spec"]["securityContext"]["runAsUser"] == defaults.WORKLOAD_UID
    assert run["status"]["phase"] == "Succeeded"


def test_spark_job_that_failed_on_its_input_is_not_retried_and_says_why(
    kube: Cluster, operator: Operator
) -> None:
    """The Spark operator records only `driver container failed with ExitCode: 2, Reason: Error`;
    the driver's termination message names the file."""
    reason = "/mnt/lth/digits: no ILSVRC2012_img_train.tar and no train/ folder"
    script = Script(bad_input={"nodata-prep": reason})
    with controllers(kube, script) as cluster:
        apply(kube, run_manifest("nodata", retry={"preprocessing": {"backoffLimit": 3}}))
        run = wait_for_phase(kube, "nodata", {"Succeeded", "Failed"}, operator=operator)
        driver = cluster.pod("nodata-prep-driver")
    failed = next(c for c in run["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PreprocessingFailed"
    assert "failed on its input (not retried)" in failed["message"]
    assert "driver container failed with ExitCode: 2, Reason: Error" in failed["message"]
    assert failed["message"].endswith("bad input: " + reason)
    assert run["status"]["preprocessing"]["attempts"] == 1
    assert len(script.uids["nodata-prep"]) == 1  # not created again
    assert driver["status"]["containerStatuses"][0]["name"] == "spark-kubernetes-driver"
    assert "Retrying" not in events(kube, "nodata")


def test_an_image_never_pushed_is_named_in_the_status(kube: Cluster, operator: Operator) -> None:
    """The node has the images `make images` pushed under another name than the default."""
    pushed = catalog(trainer_image="registry.example/lth-trainer:0.1.0")
    operator.resync_every(2)  # the operator sees a stuck pod on its resync
    with controllers(kube, Script(), images=pushed):
        apply(kube, run_manifest("unpushed"))
        stuck = wait_for(
            lambda: (
                progressing(kube, "unpushed").get("reason") == "ImagePullBackOff"
                and progressing(kube, "unpushed")
            ),
            timeout=90,
            operator=operator,
        )
        table = kube.kubectl("get", "ltr", "unpushed").stdout
        described = kube.kubectl("describe", "ltr", "unpushed").stdout
    assert "pod unpushed-level-00-master-0" in stuck["message"]
    assert f'"{defaults.TRAINER_IMAGE}"' in stuck["message"]
    assert "ImagePullBackOff" in table.splitlines()[1]
    assert "ImagePullBackOff" in described and "Warning" in described
    assert get_run(kube, "unpushed")["status"]["phase"] == "Training"  # waiting, not failed


def test_a_gpu_the_node_lacks_leaves_the_pod_unschedulable_and_says_so(
    kube: Cluster, operator: Operator
) -> None:
    operator.resync_every(2)  # the operator sees a stuck pod on its resync
    with controllers(kube, Script(), gpus=0):
        apply(kube, run_manifest("greedy", resources={"gpusPerPod": 1}))
        stuck = wait_for(
            lambda: (
                progressing(kube, "greedy").get("reason") == "Unschedulable" and progressing(kube, "greedy")
            ),
            timeout=90,
            operator=operator,
        )
    assert "pod greedy-level-00-master-0" in stuck["message"]
    assert "0/1 nodes are available: 1 Insufficient nvidia.com/gpu." in stuck["message"]


def test_a_job_suspended_for_a_kueue_the_cluster_lacks_says_so(kube: Cluster, operator: Operator) -> None:
    """Without Kueue nothing unsuspends the job: the run says so instead of looking busy (it
    said "waiting for the queue" before, as if an admission were coming)."""
    with controllers(kube, Script()):
        apply(kube, run_manifest("queued", resources={"queueName": "team-a"}))
        stuck = wait_for(
            lambda: (
                progressing(kube, "queued").get("reason") == "NotManagedByKueue"
                and progressing(kube, "queued")
            ),
            timeout=90,
            operator=operator,
        )
        jobs = children(kube)
    assert "team-a" in stuck["message"] and "serves no Kueue API" in stuck["message"]
    assert jobs["queued-level-00"]["spec"]["runPolicy"]["suspend"] is True
    assert not any(name.startswith("queued-level-00-") for name in jobs)
