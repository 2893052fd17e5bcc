"""The run's pods against a locked-down cluster's admission, without an API server: every pod
we create as the controllers would (the stand-ins' own pod builders) through the stand-in of
Pod Security admission (tests/standins/pod_security.py, from pod-security-admission v0.32.0),
and the operator's own prediction of what a level refuses (`lth.cluster.admission`), which
must agree with it; how refusals read back (events, Workloads, refused creates)."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import kmock
import kubernetes
import pytest
import yaml

from lth.api import LotteryTicketRun, RunSpec
from lth.api.defaults import WorkloadDefaults
from lth.api.status import RunStatus
from lth.api.validation import check_run
from lth.api.workload import RunPaths
from lth.cli import main
from lth.cluster import admission, queues
from lth.cluster.actions import refusal
from lth.cluster.children.export_job import export_job
from lth.cluster.children.objects import RunRef
from lth.cluster.children.pytorchjob import pytorch_job
from lth.cluster.children.spark_application import spark_application
from lth.cluster.children.trainjob import trainjob
from lth.cluster.pods import refused_pods
from tests.kube.resources import BUILT_INS
from tests.operator.helpers import chart_training_runtime
from tests.standins import job_controller, pod_security, trainer_v2, training_operator
from tests.standins import jobset as jobset_standin
from tests.standins.spark_operator import SparkOperator

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
RUN = RunRef(name="r50", namespace="ml", uid="00000000-0000-0000-0000-000000000001")


POD_KIND = next(kind for kind in BUILT_INS if kind.plural == "pods")


@dataclass
class Namespaced:
    """Just enough of the emulator for an admission plugin: the namespace `ml` with its label."""

    level: str

    @property
    def objects(self) -> dict[tuple[str, str, str, None, str], dict[str, Any]]:
        return {
            ("", "v1", "namespaces", None, "ml"): {"metadata": {"labels": {pod_security.ENFORCE: self.level}}}
        }


def exceeded(resource: str, name: str, quota: str, key: str, requested: int, used: int, limit: int) -> str:
    """ResourceQuota admission's refusal (`checkRequest`, apiserver .../resourcequota/controller.go)."""
    return (
        f'{resource} "{name}" is forbidden: exceeded quota: {quota}, requested: {key}={requested}, '
        f"used: {key}={used}, limited: {key}={limit}"
    )


def _event(uid: str, reason: str, message: str, kind: str = "PyTorchJob") -> dict[str, Any]:
    return {
        "involvedObject": {"kind": kind, "uid": uid},
        "reason": reason,
        "message": message,
        "lastTimestamp": "2026-12-06T00:00:00Z",
    }


def pods_of(
    spec: RunSpec, defaults: WorkloadDefaults, spark_webhook: bool = False
) -> dict[str, dict[str, Any]]:
    """Every kind of pod the run makes, as upstream's controllers build them from our children:
    a level's master and (with 2 pods or more) worker, the Spark driver, the export Job's pod."""
    paths = RunPaths(spec.storage.mount_path, RUN.name)
    pods: dict[str, dict[str, Any]] = {}
    if spec.resources.training_api == "TrainJob":
        # Trainer builds the JobSet from the chart's runtime; JobSet its Job; the Job controller the pods.
        job = trainjob(RUN, spec, paths, 1, "main", 1, defaults=defaults)
        job["metadata"]["uid"] = "job-uid"
        jobset = trainer_v2.TrainerV2.build_jobset(job, chart_training_runtime())
        jobset["metadata"]["uid"] = "jobset-uid"
        jobset_standin.default_jobset(jobset)
        (rjob,) = jobset["spec"]["replicatedJobs"]
        node_job = jobset_standin.construct_job(jobset, rjob, 0)
        node_job["metadata"]["uid"] = "node-job-uid"
        for index in range(spec.resources.pods):
            pods[f"node-{index}"] = job_controller.pod_from_template(node_job, index)
    else:
        job = pytorch_job(RUN, spec, paths, 1, "main", 1, defaults=defaults)
        job["metadata"]["uid"] = "job-uid"
        pods["master"] = training_operator.new_pod(job, "Master", 0)
        if spec.resources.pods > 1:
            pods["worker"] = training_operator.new_pod(job, "Worker", 0)
    if spec.dataset.format != "prepared":
        app = spark_application(RUN, spec, paths, 1, "lth-spark", defaults)
        app["metadata"]["uid"] = "app-uid"
        pods["driver"] = SparkOperator(None, webhook=spark_webhook)._driver_pod(app, "spark:4", "submission")
    export = export_job(RUN, spec, paths, 1, RunStatus(), defaults)
    export["metadata"]["uid"] = "export-uid"
    pods["export"] = job_controller.pod_from_template(export)
    return pods


def example(path: Path, **resources: Any) -> RunSpec:
    document = yaml.safe_load(path.read_text())
    spec = LotteryTicketRun.model_validate(document).spec
    return spec.model_copy(update={"resources": spec.resources.model_copy(update=resources)})


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
@pytest.mark.parametrize("pods", [1, 2])
def test_every_pod_we_create_passes_restricted_but_the_injected_init_container(path: Path, pods: int) -> None:
    spec = example(path, pods=pods)
    for name, pod in pods_of(spec, WorkloadDefaults()).items():
        found = pod_security.violations("restricted", pod["spec"])
        if name == "worker":  # init-pytorch, which only the training operator's own flag changes
            assert found and all('container "init-pytorch"' in detail for _, detail in found)
        else:
            assert found == [], (name, found)
        assert pod_security.violations("baseline", pod["spec"]) == []


@pytest.mark.parametrize(
    ("level", "pods", "ipc_lock"), list(itertools.product(["baseline", "restricted"], [1, 3], [False, True]))
)
def test_trainjob_pods_pass_restricted_and_the_operator_says_so(
    level: str, pods: int, ipc_lock: bool
) -> None:
    """A TrainJob's nodes have no injected init container: only ipcLock is refused, by both levels."""
    spec = example(EXAMPLES[0], pods=pods, ipc_lock=ipc_lock, training_api="TrainJob")
    built = pods_of(spec, WorkloadDefaults())
    nodes = {name for name in built if name.startswith("node-")}
    assert len(nodes) == pods
    refused = {name for name, pod in built.items() if pod_security.violations(level, pod["spec"])}
    said = " ".join(admission.pod_security_refusals(spec, level, WorkloadDefaults()))
    assert refused == (nodes if ipc_lock else set())
    assert ("IPC_LOCK" in said) == ipc_lock and "init-pytorch" not in said


def test_the_refusal_of_the_worker_is_upstreams_message() -> None:
    worker = pods_of(example(EXAMPLES[0], pods=2), WorkloadDefaults())["worker"]
    worker["metadata"]["namespace"] = "ml"
    with pytest.raises(kmock.KubernetesError) as refused:
        pod_security.admit(cast(Any, Namespaced("restricted")), POD_KIND, worker)
    assert refused.value.status == 403
    message = str(refused.value.message)
    name = worker["metadata"]["name"]
    assert message.startswith(f'pods "{name}" is forbidden: violates PodSecurity "restricted:latest": ')
    assert 'allowPrivilegeEscalation != false (container "init-pytorch" must set' in message
    drop = 'unrestricted capabilities (container "init-pytorch" must set securityContext.capabilities.drop='
    assert drop in message


@pytest.mark.parametrize(
    ("level", "pods", "ipc_lock", "templates"),
    list(itertools.product(["baseline", "restricted"], [1, 3], [False, True], [True, False])),
)
def test_the_operators_prediction_agrees_with_pod_security(
    level: str, pods: int, ipc_lock: bool, templates: bool
) -> None:
    """Which pods a level refuses, as the operator says before it creates any, and as the
    admission answers them: the same pods, for every combination (no false alarm, no surprise)."""
    defaults = WorkloadDefaults(spark_pod_templates=templates)
    spec = example(EXAMPLES[0], pods=pods, ipc_lock=ipc_lock)
    refused = {
        name for name, pod in pods_of(spec, defaults).items() if pod_security.violations(level, pod["spec"])
    }
    said = " ".join(admission.pod_security_refusals(spec, level, defaults))
    assert ("IPC_LOCK" in said) == bool(refused & {"master"})
    assert ("init-pytorch" in said) == (
        ("worker" in refused and "master" not in refused) or (pods > 1 and level == "restricted")
    )
    assert ("Spark driver" in said) == ("driver" in refused)
    if not refused:
        assert said == ""


def test_a_spark_operator_with_its_webhook_admits_the_driver_without_templates() -> None:
    defaults = WorkloadDefaults(spark_pod_templates=False)
    spec = example(EXAMPLES[0])
    assert pod_security.violations("restricted", pods_of(spec, defaults)["driver"]["spec"])
    assert not pod_security.violations(
        "restricted", pods_of(spec, defaults, spark_webhook=True)["driver"]["spec"]
    )


def test_a_pod_refused_by_pod_security_reads_back_with_its_fixes() -> None:
    message = (
        'Error creating: pods "r50-level-01-worker-0" is forbidden: violates PodSecurity '
        '"restricted:latest": allowPrivilegeEscalation != false (container "init-pytorch" must set '
        "securityContext.allowPrivilegeEscalation=false)"
    )
    events = [
        _event("other-uid", "FailedCreatePod", "Error creating: stale"),
        _event("job-uid", "FailedCreatePod", message),
    ]
    stuck = refused_pods("PyTorchJob", "r50-level-01", events, "PyTorchJob", uid="job-uid")
    assert stuck is not None and stuck.reason == "PodRefused"
    assert (
        'violates PodSecurity "restricted:latest"' in stuck.detail
        and "--pytorch-init-container-template-file" in stuck.detail
    )
    quota = "Error creating: " + exceeded("pods", "x", "gpus", "requests.nvidia.com/gpu", 4, 4, 4)
    stuck = refused_pods(
        "Job", "r50-export", [_event("job-uid", "FailedCreate", quota, "Job")], "Job", uid="job-uid"
    )
    assert stuck is not None and stuck.reason == "QuotaExceeded" and "exceeded quota: gpus" in stuck.detail
    assert (
        refused_pods(
            "Job",
            "r50-export",
            [_event("job-uid", "SuccessfulCreate", "Created pod: x", "Job")],
            "Job",
            uid="job-uid",
        )
        is None
    )


@pytest.mark.parametrize(
    ("workloads", "age", "reason", "words"),
    [
        (None, 0.0, "NotManagedByKueue", "serves no Kueue API"),
        ([], 1.0, "WaitingForQueue", "suspended until Kueue admits it from queue 'team-a'"),
        ([], 3600.0, "NotManagedByKueue", "Kueue does not manage kubeflow.org/pytorchjob"),
        (
            [
                {
                    "metadata": {"name": "pytorchjob-r-abcde"},
                    "status": {
                        "conditions": [
                            {
                                "type": "QuotaReserved",
                                "status": "False",
                                "reason": "Misconfigured",
                                "message": "LocalQueue team-a doesn't exist",
                            }
                        ]
                    },
                }
            ],
            3600.0,
            "WaitingForQueue",
            "Misconfigured: LocalQueue team-a doesn't exist",
        ),
    ],
)
def test_why_kueue_holds_a_job(workloads: Any, age: float, reason: str, words: str) -> None:
    stuck = queues.waiting_for_queue("PyTorchJob", "r-level-00", "team-a", age, workloads)
    assert stuck.reason == reason and words in stuck.detail


@pytest.mark.parametrize(
    ("status", "message", "state", "retryable", "reason"),
    [
        (
            403,
            exceeded("pytorchjobs.kubeflow.org", "x", "q", "count/pytorchjobs.kubeflow.org", 1, 0, 0),
            "Refused",
            True,
            "QuotaExceeded",
        ),
        (404, "the server could not find the requested resource", "Refused", True, "ApiMissing"),
        (
            403,
            'admission webhook "deny.example.com" denied the request: no GPUs for this team',
            "Refused",
            False,
            None,
        ),
        (
            422,
            'PyTorchJob.kubeflow.org "x" is invalid: spec.pytorchReplicaSpecs.Master.replicas: Invalid: 2',
            "Refused",
            False,
            None,
        ),
    ],
)
def test_a_refused_create_is_observed_with_the_servers_words(
    status: int, message: str, state: str, retryable: bool, reason: str | None
) -> None:
    error = kubernetes.client.ApiException(status=status, reason="Refused")
    error.body = json.dumps({"kind": "Status", "message": message})
    child = refusal("PyTorchJob", "r-level-00", 1, error)
    assert (child.state, child.retryable) == (state, retryable)
    assert (child.stuck.reason if child.stuck else None) == reason
    assert message in child.message


def test_server_errors_are_not_refusals() -> None:
    with pytest.raises(kubernetes.client.ApiException):
        refusal(
            "PyTorchJob", "r-level-00", 1, kubernetes.client.ApiException(status=503, reason="Unavailable")
        )


@pytest.mark.parametrize("queue", ["Team_A", "team-a-", "a" * 64, "team a"])
def test_a_queue_name_kueue_would_refuse_is_refused_naming_the_field(queue: str) -> None:
    document = yaml.safe_load(EXAMPLES[0].read_text())
    document["spec"].setdefault("resources", {})["queueName"] = queue
    _, problems = check_run(document)
    assert any(problem.path == "spec.resources.queueName" for problem in problems), problems


def test_lth_validate_warns_about_what_a_pod_security_level_will_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = yaml.safe_load((ROOT / "examples" / "imagenet-resnet50.yaml").read_text())
    document["spec"]["resources"].update(pods=2, ipcLock=True)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(document))
    assert main(["validate", str(path), "--pod-security", "baseline"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "IPC_LOCK" in err[0] and "warning: Pod Security baseline will refuse" in err[0]
    assert main(["validate", str(path), "--pod-security", "restricted"]) == 0
    captured = capsys.readouterr()
    assert "init-pytorch" in captured.err and f"{path}: valid (2 warning(s))" in captured.out
