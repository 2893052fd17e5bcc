"""What the emulator adds to kmock, one test per behaviour, through the real `kubernetes` client."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.kube.cluster import Cluster
from tests.kube.resources import UPSTREAM_CRDS

GROUP, VERSION, PLURAL = "lth.dev", "v1alpha1", "lotteryticketruns"
RUN = {
    "apiVersion": "lth.dev/v1alpha1",
    "kind": "LotteryTicketRun",
    "metadata": {"name": "run-a", "labels": {"team": "vision"}},
    "spec": {"dataset": {"path": "digits", "format": "imagefolder"}, "model": {"arch": "smallcnn"}},
}


@pytest.fixture
def custom(kube: Cluster) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube.api_client())


@pytest.fixture
def core(kube: Cluster) -> client.CoreV1Api:
    return client.CoreV1Api(kube.api_client())


def run(name: str = "run-a", **labels: str) -> dict[str, Any]:
    body = copy.deepcopy(RUN)
    body["metadata"] = {"name": name, "labels": labels or {"team": "vision"}}
    return body


def _merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in change.items():
        merged[key] = _merge(merged.get(key, {}), value) if isinstance(value, dict) else value
    return merged


def pod(**metadata: Any) -> dict[str, Any]:
    return {"metadata": metadata, "spec": {"containers": [{"name": "main", "image": "busybox"}]}}


def create(custom: client.CustomObjectsApi, body: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)
    return created


def status_of(error: pytest.ExceptionInfo[ApiException]) -> int:
    return int(error.value.status)


def message_of(error: pytest.ExceptionInfo[ApiException]) -> str:
    return str(json.loads(error.value.body)["message"])


def test_create_answers_201_with_server_metadata(custom: client.CustomObjectsApi) -> None:
    obj, status, _ = custom.create_namespaced_custom_object_with_http_info(
        GROUP, VERSION, "default", PLURAL, run()
    )
    meta = obj["metadata"]
    assert status == 201
    assert meta["namespace"] == "default"  # from the URL: the body had none
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1


def test_generate_name_gets_a_random_suffix(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_pod("default", pod(generateName="worker-"))
    assert created.metadata.name.startswith("worker-") and len(created.metadata.name) == len("worker-") + 5


def test_create_in_a_missing_namespace_is_404(custom: client.CustomObjectsApi) -> None:
    with pytest.raises(ApiException) as error:
        custom.create_namespaced_custom_object(GROUP, VERSION, "nowhere", PLURAL, run())
    assert status_of(error) == 404 and 'namespaces "nowhere" not found' in message_of(error)


def test_name_clash_is_409(custom: client.CustomObjectsApi) -> None:
    create(custom, run())
    with pytest.raises(ApiException) as error:
        create(custom, run())
    assert status_of(error) == 409 and "already exists" in message_of(error)


def test_resource_version_bumps_on_writes_generation_on_spec_only(custom: client.CustomObjectsApi) -> None:
    created = create(custom, run())
    relabelled = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "run-a", {"metadata": {"labels": {"team": "audio"}}}
    )
    respecced = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "run-a", {"spec": {"pruning": {"levels": 5}}}
    )
    versions = [int(obj["metadata"]["resourceVersion"]) for obj in (created, relabelled, respecced)]
    assert versions == sorted(set(versions))
    assert [obj["metadata"]["generation"] for obj in (created, relabelled, respecced)] == [1, 1, 2]


def test_no_op_patch_keeps_the_resource_version(custom: client.CustomObjectsApi) -> None:
    created = create(custom, run())
    same = custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "run-a", {"spec": {}})
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_stale_update_is_409(custom: client.CustomObjectsApi) -> None:
    created = create(custom, run())
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "run-a", {"spec": {"pruning": {"levels": 4}}}
    )
    with pytest.raises(ApiException) as error:
        custom.replace_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "run-a", created)
    assert status_of(error) == 409 and "the object has been modified" in message_of(error)


def test_put_replaces_the_object(custom: client.CustomObjectsApi) -> None:
    current = create(custom, run())
    current["spec"]["model"]["arch"] = "resnet18"
    replaced = custom.replace_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "run-a", current)
    assert replaced["spec"]["model"]["arch"] == "resnet18"
    assert replaced["metadata"]["generation"] == 2


def test_status_is_written_through_the_status_subresource_only(custom: client.CustomObjectsApi) -> None:
    create(custom, run())
    ignored = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "run-a", {"status": {"phase": "Training"}}
    )
    written = custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "run-a",
        {"status": {"phase": "Training"}, "spec": {"model": {"arch": "resnet50"}}},
    )
    assert "status" not in ignored
    assert written["status"]["phase"] == "Training"
    assert written["spec"]["model"]["arch"] == "smallcnn"  # spec through /status is ignored
    assert written["metadata"]["generation"] == 1


def test_lists_are_typed(custom: client.CustomObjectsApi) -> None:
    create(custom, run())
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    assert (listed["apiVersion"], listed["kind"]) == ("lth.dev/v1alpha1", "LotteryTicketRunList")
    assert [item["metadata"]["name"] for item in listed["items"]] == ["run-a"]


def test_label_and_field_selectors_filter_lists(custom: client.CustomObjectsApi) -> None:
    for name, team in (("run-a", "vision"), ("run-b", "audio"), ("run-c", "vision")):
        create(custom, run(name, team=team))

    def names(**selectors: str) -> list[str]:
        listed = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, **selectors)
        return [item["metadata"]["name"] for item in listed["items"]]

    assert names(label_selector="team=vision") == ["run-a", "run-c"]
    assert names(label_selector="team in (audio),!missing") == ["run-b"]
    assert names(field_selector="metadata.name!=run-a", label_selector="team=vision") == ["run-c"]


def test_watch_resumes_after_the_given_resource_version(custom: client.CustomObjectsApi) -> None:
    first = create(custom, run("run-a"))
    create(custom, run("run-b", team="audio"))
    create(custom, run("run-c"))
    events = [
        (event["type"], event["object"]["metadata"]["name"])
        for event in watch.Watch().stream(
            custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            "default",
            PLURAL,
            resource_version=first["metadata"]["resourceVersion"],
            label_selector="team=vision",
            timeout_seconds=1,
        )
    ]
    assert events == [("ADDED", "run-c")]


def test_deleting_an_owner_collects_its_children(
    custom: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    owner = create(custom, run())

    def owned_by(obj: dict[str, Any]) -> list[dict[str, Any]]:
        meta = obj["metadata"]
        return [
            {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"], "uid": meta["uid"]}
        ]

    child = core.create_namespaced_pod("default", pod(name="child", ownerReferences=owned_by(owner)))
    child_body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "child", "uid": child.metadata.uid}}
    core.create_namespaced_pod("default", pod(name="grandchild", ownerReferences=owned_by(child_body)))
    core.create_namespaced_pod("default", pod(name="bystander"))

    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "run-a")
    assert [pod.metadata.name for pod in core.list_namespaced_pod("default").items] == ["bystander"]


def test_finalizers_hold_a_deleted_object(custom: client.CustomObjectsApi) -> None:
    body = run()
    body["metadata"]["finalizers"] = ["lth.dev/cleanup"]
    create(custom, body)
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "run-a")
    held = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "run-a")
    assert held["metadata"]["deletionTimestamp"]
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "run-a", {"metadata": {"finalizers": None}}
    )
    with pytest.raises(ApiException) as error:
        custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "run-a")
    assert status_of(error) == 404


def test_json_patch_test_failure_is_422(custom: client.CustomObjectsApi) -> None:
    """kopf adds and removes finalizers with a JSON patch that tests the resourceVersion first."""
    create(custom, run())
    stale = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x"]},
    ]
    with pytest.raises(ApiException) as error:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, "run-a", stale, _content_type="application/json-patch+json"
        )
    assert status_of(error) == 422, error.value.body


def test_schema_defaults_are_applied(custom: client.CustomObjectsApi) -> None:
    created = create(custom, run())
    assert created["spec"]["dataset"]["resize"] == "center-crop"
    assert created["spec"]["pruning"]["fraction"] == 0.2


PYTORCHJOB = {
    "apiVersion": "kubeflow.org/v1",
    "kind": "PyTorchJob",
    "metadata": {"name": "job"},
    "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": {"spec": {"containers": []}}}}},
}
SPARKAPP = {
    "apiVersion": "sparkoperator.k8s.io/v1beta2",
    "kind": "SparkApplication",
    "metadata": {"name": "prep"},
    "spec": {
        "type": "Python",
        "mode": "cluster",
        "sparkVersion": "4.0.1",
        "driver": {"cores": 1},
        "executor": {"instances": 2, "cores": 4},
        "mainApplicationFile": "local:///x.py",
        "restartPolicy": {"type": "Never"},
    },
}


@pytest.mark.parametrize(
    ("plural", "body", "message"),
    [
        (
            "pytorchjobs",
            _merge(PYTORCHJOB, {"spec": {"pytorchReplicaSpecs": {"Master": {"replicas": "two"}}}}),
            'PyTorchJob.kubeflow.org "job" is invalid: spec.pytorchReplicaSpecs[Master].replicas: '
            'Invalid value: "string": spec.pytorchReplicaSpecs[Master].replicas in body '
            'must be of type integer: "string"',
        ),
        (
            "sparkapplications",
            _merge(SPARKAPP, {"spec": {"type": "Go"}}),
            'SparkApplication.sparkoperator.k8s.io "prep" is invalid: spec.type: Unsupported value: "Go": '
            'supported values: "Java", "Python", "Scala", "R"',
        ),
    ],
)
def test_invalid_child_is_422_naming_the_field(
    custom: client.CustomObjectsApi, plural: str, body: dict[str, Any], message: str
) -> None:
    group, version = body["apiVersion"].split("/")
    with pytest.raises(ApiException) as error:
        custom.create_namespaced_custom_object(group, version, "default", plural, body)
    assert status_of(error) == 422
    assert message_of(error) == message


def test_unknown_field_is_pruned_or_refused_under_strict(custom: client.CustomObjectsApi) -> None:
    """Pruned (with a warning) by default; refused with 400 under `fieldValidation=Strict` (kubectl's)."""
    app = _merge(SPARKAPP, {"spec": {"executers": 3}})
    args = ("sparkoperator.k8s.io", "v1beta2", "default", "sparkapplications", app)
    with pytest.raises(ApiException) as error:
        custom.create_namespaced_custom_object(*args, field_validation="Strict")
    assert status_of(error) == 400 and message_of(error).endswith(
        'strict decoding error: unknown field "spec.executers"'
    )
    created = custom.create_namespaced_custom_object(*args)
    assert "executers" not in created["spec"] and created["spec"]["executor"]["instances"] == 2


def test_test_specific_reactions_still_override_the_store(kube: Cluster, core: client.CoreV1Api) -> None:
    kube.api["post /api/v1/namespaces/default/pods"] << 500
    with pytest.raises(ApiException) as error:
        core.create_namespaced_pod("default", pod(name="p"))
    assert status_of(error) == 500
    assert core.list_namespaced_pod("default").items == []


def test_server_side_dry_run_writes_nothing(custom: client.CustomObjectsApi) -> None:
    answered = custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, run(), dry_run="All")
    assert answered["spec"]["dataset"]["resize"] == "center-crop"  # admitted as for real
    assert custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)["items"] == []


def test_deleting_a_namespace_deletes_what_is_in_it(core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "scratch"}})
    core.create_namespaced_pod("scratch", pod(name="inside"))
    core.delete_namespace("scratch")
    assert core.list_pod_for_all_namespaces().items == []


def test_registered_crd_is_served(kube: Cluster, custom: client.CustomObjectsApi) -> None:
    kube.register(UPSTREAM_CRDS / "trainer.kubeflow.org_trainjobs.yaml")
    kube.add(
        {
            "apiVersion": "trainer.kubeflow.org/v1alpha1",
            "kind": "TrainJob",
            "metadata": {"name": "t"},
            "spec": {"runtimeRef": {"name": "torch"}},
        }
    )
    listed = custom.list_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", "default", "trainjobs")
    assert [item["metadata"]["name"] for item in listed["items"]] == ["t"]


# -- batch/v1 Job ------------------------------------------------------------------------------


def job(name: str = "export", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, **meta},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app": "lth"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "export", "image": "trainer"}]},
            },
        },
    }


@pytest.fixture
def batch(kube: Cluster) -> client.BatchV1Api:
    return client.BatchV1Api(kube.api_client())


def test_a_job_gets_the_servers_defaults_selector_and_template_labels(batch: client.BatchV1Api) -> None:
    """SetDefaults_Job, then generateSelector (upstream-behaviour.md 5a)."""
    created = json.loads(batch.create_namespaced_job("default", job(), _preload_content=False).data)
    uid, spec = created["metadata"]["uid"], created["spec"]
    assert created["metadata"]["labels"] == {"app": "lth"}  # the template's, as the Job had none
    assert {k: spec[k] for k in ("completions", "parallelism", "backoffLimit", "completionMode")} == {
        "completions": 1,
        "parallelism": 1,
        "backoffLimit": 0,
        "completionMode": "NonIndexed",
    }
    assert (spec["suspend"], spec["manualSelector"], spec["podReplacementPolicy"]) == (
        False,
        False,
        "TerminatingOrFailed",
    )
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert spec["template"]["metadata"]["labels"] == {
        "app": "lth",
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": "export",
        "controller-uid": uid,
        "job-name": "export",
    }
    assert "status" not in created


def test_deleting_a_job_without_a_propagation_policy_orphans_its_pods(
    batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    """batch/v1's DefaultGarbageCollectionPolicy is OrphanDependents (jobStrategy)."""
    for name in ("orphaned", "collected"):
        created = batch.create_namespaced_job("default", job(name))
        owner = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": name,
                "uid": created.metadata.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        core.create_namespaced_pod("default", pod(name=f"{name}-pod", ownerReferences=owner))
    batch.delete_namespaced_job("orphaned", "default")
    batch.delete_namespaced_job("collected", "default", propagation_policy="Background")
    (left,) = core.list_namespaced_pod("default").items
    assert (left.metadata.name, left.metadata.owner_references) == ("orphaned-pod", None)
    assert batch.list_namespaced_job("default").items == []


def test_deleting_the_owner_of_a_job_collects_it_and_its_pods(
    custom: client.CustomObjectsApi, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    """The garbage collector deletes dependents in the background, whatever the Job's own default."""
    owner = create(custom, run())
    body = job()
    body["metadata"]["ownerReferences"] = [
        {
            "apiVersion": RUN["apiVersion"],
            "kind": "LotteryTicketRun",
            "name": "run-a",
            "uid": owner["metadata"]["uid"],
        }
    ]
    created = batch.create_namespaced_job("default", body)
    owned = [{"apiVersion": "batch/v1", "kind": "Job", "name": "export", "uid": created.metadata.uid}]
    core.create_namespaced_pod("default", pod(name="export-abcde", ownerReferences=owned))
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "run-a")
    assert batch.list_namespaced_job("default").items == []
    assert core.list_namespaced_pod("default").items == []


# -- pods/log ----------------------------------------------------------------------------------


def running_pod(
    core: client.CoreV1Api, name: str = "p", containers: tuple[str, ...] = ("main",), **state: Any
) -> None:
    """A pod on a node whose containers are all in `state` (running unless told)."""
    body = {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": c, "image": "busybox"} for c in containers]},
    }
    core.create_namespaced_pod("default", body)
    core.patch_namespaced_pod(name, "default", {"spec": {"nodeName": "node-1"}}, _preload_content=False)
    statuses = [
        {
            "name": c,
            "image": "busybox",
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "containerID": f"containerd://{c}",
            "state": state or {"running": {}},
        }
        for c in containers
    ]
    status = {"status": {"phase": "Running", "containerStatuses": statuses}}
    core.patch_namespaced_pod_status(name, "default", status, _preload_content=False)


def log_error(call: Any) -> tuple[int, str]:
    with pytest.raises(ApiException) as error:
        call()
    return status_of(error), message_of(error)


def test_pod_log_is_the_nodes_text_with_tail_lines_and_limit_bytes(
    kube: Cluster, core: client.CoreV1Api
) -> None:
    running_pod(core)
    assert core.read_namespaced_pod_log("p", "default") == ""  # no node logs: nothing written yet
    kube.api.container_logs = lambda namespace, name, container: f"{namespace}/{name}/{container}\nb\nc\n"
    assert core.read_namespaced_pod_log("p", "default", container="main") == "default/p/main\nb\nc\n"
    assert core.read_namespaced_pod_log("p", "default", container="main", tail_lines=2) == "b\nc\n"
    assert core.read_namespaced_pod_log("p", "default", tail_lines=0) == ""
    assert core.read_namespaced_pod_log("p", "default", limit_bytes=3) == "def"
    response = core.read_namespaced_pod_log("p", "default", _preload_content=False)
    assert response.headers["Content-Type"].startswith("text/plain")


def test_pod_log_errors_are_worded_as_the_api_server_and_kubelet_word_them(core: client.CoreV1Api) -> None:
    """LogLocation (API server) and validateContainerLogStatus (kubelet): upstream-behaviour.md 5f."""
    running_pod(core, "two", ("a", "b"))
    assert log_error(lambda: core.read_namespaced_pod_log("two", "default")) == (
        400,
        "a container name must be specified for pod two, choose one of: [a b]",
    )
    assert log_error(lambda: core.read_namespaced_pod_log("two", "default", container="c")) == (
        400,
        "container c is not valid for pod two",
    )
    running_pod(core, "waiting", waiting={"reason": "ContainerCreating"})
    assert log_error(lambda: core.read_namespaced_pod_log("waiting", "default")) == (
        400,
        'container "main" in pod "waiting" is waiting to start: ContainerCreating',
    )
    running_pod(core, "pulling", waiting={"reason": "ImagePullBackOff"})
    assert log_error(lambda: core.read_namespaced_pod_log("pulling", "default")) == (
        400,
        'container "main" in pod "pulling" is waiting to start: trying and failing to pull image',
    )
    assert log_error(
        lambda: core.read_namespaced_pod_log("two", "default", container="a", previous=True)
    ) == (
        400,
        'previous terminated container "a" in pod "two" not found',
    )
    assert log_error(lambda: core.read_namespaced_pod_log("nope", "default")) == (
        404,
        'pods "nope" not found',
    )
    assert log_error(
        lambda: core.read_namespaced_pod_log("two", "default", container="a", tail_lines=-1)
    ) == (
        422,
        'PodLogOptions "two" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0',
    )
    core.create_namespaced_pod("default", pod(name="unscheduled"))
    assert core.read_namespaced_pod_log("unscheduled", "default") == ""  # no node: an empty answer
