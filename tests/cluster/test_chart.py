"""The Helm chart, rendered and linted by Helm's own engine (helm-python-sdk)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from lth.api.defaults import ENV_VAR, WorkloadDefaults
from lth.cluster.children.objects import CHILD_RESOURCES

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "lth-operator"
NAMESPACE = "lth-system"

OPERATOR_GRANTS = (
    {("lth.dev", "lotteryticketruns", verb) for verb in ("get", "list", "watch", "patch")}
    | {
        ("lth.dev", "lotteryticketruns/status", "get"),
        ("lth.dev", "lotteryticketruns/status", "patch"),
        ("lth.dev", "lotteryticketruns/finalizers", "update"),
        ("", "pods", "get"),
        ("", "pods", "list"),
        ("", "pods/log", "get"),
        ("", "events", "create"),
        ("", "events", "list"),
        ("kueue.x-k8s.io", "workloads", "get"),
        ("kueue.x-k8s.io", "workloads", "list"),
    }
    | {("batch", "jobs", verb) for verb in ("create", "get", "list", "watch", "delete")}
    | {
        (group, resource, verb)
        for group, resource in (
            ("sparkoperator.k8s.io", "sparkapplications"),
            ("kubeflow.org", "pytorchjobs"),
        )
        for verb in ("create", "get", "list", "watch", "delete", "patch")
    }
    | {("trainer.kubeflow.org", "trainjobs", verb) for verb in ("create", "get", "list", "watch", "delete")}
)
"""Everything the operator may do in a namespace it watches, and all that it needs."""
NAMESPACE_GRANT = ("", "namespaces", "get")
"""And the labels of the namespaces it watches (their Pod Security level), read only."""

SPARK_DRIVER_GRANTS = {
    ("", resource, verb)
    for resource, verbs in (
        ("pods", ("create", "get", "list", "watch", "delete", "deletecollection", "patch")),
        ("services", ("create", "get", "list", "watch", "delete", "deletecollection")),
        ("configmaps", ("create", "get", "list", "watch", "delete", "deletecollection")),
        ("persistentvolumeclaims", ("get", "list")),
    )
    for verb in verbs
}


def render(values: dict[str, Any] | None = None, name: str = "lth") -> list[dict[str, Any]]:
    chart = helm_python.Chart.load(str(CHART))
    rendered = chart.render(values or {}, name=name, namespace=NAMESPACE)
    return [
        doc
        for path, text in sorted(rendered.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def grants(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def the_deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = of_kind(docs, "Deployment")
    return deployment


CUSTOM = {
    "watch": {"allNamespaces": False, "namespaces": ["team-a", "team-b"]},
    "serviceAccount": {"create": False, "name": "existing-sa"},
    "sparkServiceAccount": {"create": True, "name": "spark-driver"},
    "metrics": {"port": 9090, "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "image": {"repository": "registry.example/lth-operator", "tag": "dev"},
    "logFormat": "plain",
    "nodeSelector": {"pool": "system"},
    "runsVolume": {"claimName": "lth-data", "mountPath": "/mnt/lth", "subPath": "team-a"},
}


def test_chart_crd_is_the_generated_one() -> None:
    copy = CHART / "crds" / "lotteryticketruns.lth.dev.yaml"
    assert copy.read_bytes() == (ROOT / "crds" / "lotteryticketruns.lth.dev.yaml").read_bytes(), (
        "the chart's CRD drifted from crds/: run `make crd`"
    )


@pytest.mark.parametrize("values", [{}, CUSTOM], ids=["default", "custom"])
def test_lint_finds_no_errors_or_warnings(values: dict[str, Any]) -> None:
    report = helm_python.lint(str(CHART), values, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", [{}, CUSTOM], ids=["default", "custom"])
def test_rendered_objects_are_valid_kubernetes(values: dict[str, Any]) -> None:
    docs = render(values)
    for doc in docs:
        if doc["apiVersion"] != "monitoring.coreos.com/v1":
            kubernetes_validate.validate(doc, "1.34", strict=True)


def test_default_install_watches_all_namespaces_with_one_cluster_role() -> None:
    docs = render()
    (role,) = of_kind(docs, "ClusterRole")
    assert grants(role) == OPERATOR_GRANTS | {NAMESPACE_GRANT}
    (binding,) = of_kind(docs, "ClusterRoleBinding")
    (account,) = [a for a in of_kind(docs, "ServiceAccount") if a["metadata"]["name"] != "lth-spark"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert not of_kind(docs, "Role") or all(
        r["metadata"]["name"] == "lth-spark" for r in of_kind(docs, "Role")
    )
    args = the_deployment(docs)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == [
        "run",
        "--standalone",
        "--log-format=json",
        "-m",
        "lth.cluster.handlers",
        "--all-namespaces",
    ]
    assert not of_kind(docs, "Service") and not of_kind(docs, "ServiceMonitor")


def test_namespaced_install_grants_roles_only_where_it_watches() -> None:
    docs = render(CUSTOM)
    (namespaces,) = of_kind(docs, "ClusterRole")  # the watched namespaces' labels, by name only
    assert grants(namespaces) == {NAMESPACE_GRANT}
    assert namespaces["rules"][0]["resourceNames"] == ["team-a", "team-b"]
    (binding,) = of_kind(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == namespaces["metadata"]["name"]
    assert binding["subjects"][0]["name"] == "existing-sa"
    operator_roles = [r for r in of_kind(docs, "Role") if r["metadata"]["name"] != "spark-driver"]
    assert sorted(r["metadata"]["namespace"] for r in operator_roles) == ["team-a", "team-b"]
    assert all(grants(r) == OPERATOR_GRANTS for r in operator_roles)
    bindings = [b for b in of_kind(docs, "RoleBinding") if b["metadata"]["name"] != "spark-driver"]
    assert {b["subjects"][0]["name"] for b in bindings} == {"existing-sa"}
    assert [a["metadata"]["name"] for a in of_kind(docs, "ServiceAccount")] == ["spark-driver"] * 2
    container = the_deployment(docs)["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-2:] == ["--namespace=team-a", "--namespace=team-b"]
    assert container["image"] == "registry.example/lth-operator:dev"
    assert {"name": "LTH_SPARK_SERVICE_ACCOUNT", "value": "spark-driver"} in container["env"]
    (service,) = of_kind(docs, "Service")
    assert service["spec"]["ports"][0]["port"] == 9090
    (monitor,) = of_kind(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"


@pytest.mark.parametrize("values", [{}, CUSTOM], ids=["default", "custom"])
def test_spark_driver_role_is_limited_to_its_executors(values: dict[str, Any]) -> None:
    docs = render(values)
    name = values.get("sparkServiceAccount", {}).get("name", "lth-spark")
    roles = [r for r in of_kind(docs, "Role") if r["metadata"]["name"] == name]
    assert roles and all(grants(r) == SPARK_DRIVER_GRANTS for r in roles)
    namespaces = sorted(r["metadata"]["namespace"] for r in roles)
    assert namespaces == (["team-a", "team-b"] if values else [NAMESPACE])


def test_no_wildcards_anywhere() -> None:
    for values in ({}, CUSTOM):
        for role in of_kind(render(values), "Role") + of_kind(render(values), "ClusterRole"):
            assert not any("*" in g for g in grants(role))


def test_operator_pod_is_locked_down() -> None:
    pod = the_deployment(render())["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert the_deployment(render())["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"watch": {"allNamespaces": "yes"}}, "/watch/allNamespaces"),
        ({"watch": {"allNamespaces": False, "namespaces": ["Not_A_Namespace"]}}, "/watch/namespaces/0"),
        ({"metrics": {"port": 80}}, "/metrics/port"),
        ({"replicas": 2}, "replicas"),
        ({"runsVolume": {"mountPath": "mnt"}}, "/runsVolume/mountPath"),
        ({"workloads": {"runAsUser": "10001"}}, "/workloads/runAsUser"),
        ({"workloads": {"runAsUser": 0}}, "/workloads/runAsUser"),
        ({"workloads": {"imagePullPolicy": "Sometimes"}}, "/workloads/imagePullPolicy"),
        ({"workloads": {"imagePullSecrets": [{"name": "regcred"}]}}, "/workloads/imagePullSecrets/0"),
        ({"workloads": {"gpuNodeSelector": {"gpu": True}}}, "/workloads/gpuNodeSelector/gpu"),
        ({"workloads": {"gpuTolerations": [{"operator": "Exists", "effekt": "NoSchedule"}]}}, "effekt"),
        ({"workloads": {"trainerImage": ""}}, "/workloads/trainerImage"),
        ({"workloads": {"sparkimage": "x"}}, "sparkimage"),
        ({"tensorboard": {"enabled": "yes"}}, "/tensorboard/enabled"),
        ({"tensorboard": {"port": 80}}, "/tensorboard/port"),
        ({"tensorboard": {"logdir": "../secrets"}}, "/tensorboard/logdir"),
        ({"tensorboard": {"namespace": "ML"}}, "/tensorboard/namespace"),
        ({"tensorboard": {"claim": "lth-data"}}, "claim"),
    ],
)
def test_values_schema_refuses_bad_values(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=where):
        render(values)


def test_the_runs_volume_is_mounted_read_only_where_the_operator_looks_for_it() -> None:
    pod = the_deployment(render())["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    assert "LTH_STORAGE_ROOT" not in {e["name"] for e in pod["containers"][0]["env"]}

    pod = the_deployment(render(CUSTOM))["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    runs = next(v for v in pod["volumes"] if v["name"] == "runs")
    assert runs["persistentVolumeClaim"] == {"claimName": "lth-data", "readOnly": True}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "runs")
    assert mount == {"name": "runs", "mountPath": "/mnt/lth", "readOnly": True, "subPath": "team-a"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LTH_STORAGE_ROOT"] == "/mnt/lth"


def test_image_digest_pins_the_image() -> None:
    digest = "sha256:" + "ab" * 32
    docs = render({"image": {"repository": "r.example/op", "tag": "1.0", "digest": digest}})
    (container,) = the_deployment(docs)["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"r.example/op@{digest}"


def test_network_policy_admits_only_the_metrics_port() -> None:
    (policy,) = of_kind(render(CUSTOM), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": 9090, "protocol": "TCP"}]}]
    assert not of_kind(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy")


def test_operator_may_manage_every_child_kind_the_manifests_emit() -> None:
    for group, _version, plural in CHILD_RESOURCES.values():
        assert {(group, plural, verb) for verb in ("create", "get", "watch", "delete")} <= OPERATOR_GRANTS


def test_chart_app_version_is_the_project_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


# --------------------------------------------------------------------------- workload defaults

WORKLOADS = {
    "trainerImage": "registry.example/lth-trainer:1.2.3",
    "sparkImage": "registry.example/lth-spark:1.2.3",
    "imagePullPolicy": "Always",
    "imagePullSecrets": ["regcred", "mirror.cred"],
    "gpuNodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
    "gpuTolerations": [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "pool", "operator": "Equal", "value": "ml", "effect": "NoExecute", "tolerationSeconds": 60},
    ],
    "runAsUser": 2147483647,
    "runAsGroup": 0,
}


def workload_defaults(docs: list[dict[str, Any]]) -> WorkloadDefaults:
    """What the operator reads from its environment, as `lth.api.defaults.from_environment` does."""
    (container,) = the_deployment(docs)["spec"]["template"]["spec"]["containers"]
    (value,) = [e["value"] for e in container["env"] if e["name"] == ENV_VAR]
    return WorkloadDefaults.model_validate(json.loads(value))


def test_default_workloads_are_the_operators_built_in_defaults() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["workloads"] == WorkloadDefaults().to_wire()
    assert workload_defaults(render()) == WorkloadDefaults()


def test_values_schema_knows_exactly_the_workload_defaults() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    fields = {info.alias for info in WorkloadDefaults.model_fields.values()}
    assert set(schema["properties"]["workloads"]["properties"]) == fields


@pytest.mark.parametrize(
    "workloads",
    [WORKLOADS, {"trainerImage": "r.example/t:dev", "runAsUser": 4242}],
    ids=["all", "some"],
)
def test_workloads_reach_the_operator_as_one_json_value(workloads: dict[str, Any]) -> None:
    docs = render({"workloads": workloads})
    got = workload_defaults(docs)
    assert got == WorkloadDefaults.model_validate({**WorkloadDefaults().to_wire(), **workloads})
    assert {k: v for k, v in got.to_wire().items() if k in workloads} == workloads
    report = helm_python.lint(str(CHART), {"workloads": workloads}, namespace=NAMESPACE)
    assert report["errors"] == []


def test_the_training_runtime_comes_with_trainjobs_only() -> None:
    """Trainer v2's CRDs need not exist for a PyTorchJob cluster: no ClusterTrainingRuntime then."""
    assert of_kind(render(), "ClusterTrainingRuntime") == []
    for values in ({"trainingRuntime": {"create": True}}, {"workloads": {"trainingApi": "TrainJob"}}):
        (runtime,) = of_kind(render(values), "ClusterTrainingRuntime")
        assert runtime["metadata"]["name"] == WorkloadDefaults().training_runtime
        assert helm_python.lint(str(CHART), values, namespace=NAMESPACE)["errors"] == []
    (named,) = of_kind(
        render({"trainingRuntime": {"create": True}, "workloads": {"trainingRuntime": "t"}}),
        "ClusterTrainingRuntime",
    )
    assert named["metadata"]["name"] == "t"
    assert workload_defaults(render({"workloads": {"trainingApi": "TrainJob"}})).training_api == "TrainJob"


# --------------------------------------------------------------------------- TensorBoard

TENSORBOARD = {"tensorboard": {"enabled": True, "namespace": "ml", "subPath": "team-a"}}


def tensorboard_objects(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs if d["metadata"]["name"].endswith("-tensorboard")}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_tensorboard_is_off_by_default() -> None:
    assert tensorboard_objects(render()) == {}
    assert len(of_kind(render(), "Deployment")) == 1


def test_tensorboard_reads_the_runs_volume_read_only_beside_the_runs() -> None:
    docs = render(TENSORBOARD)
    objects = tensorboard_objects(docs)
    assert sorted(objects) == ["Deployment", "NetworkPolicy", "Service"]
    assert {o["metadata"]["namespace"] for o in objects.values()} == {"ml"}  # where the claim is
    for doc in objects.values():
        kubernetes_validate.validate(doc, "1.34", strict=True)
    pod = objects["Deployment"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == WorkloadDefaults().trainer_image  # it has the tensorboard package
    assert container["command"] == ["tensorboard"]
    assert container["args"] == ["--logdir=/mnt/lth/runs", "--host=0.0.0.0", "--port=6006"]
    runs = next(v for v in pod["spec"]["volumes"] if v["name"] == "runs")
    assert runs["persistentVolumeClaim"] == {"claimName": "lth-data", "readOnly": True}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "runs")
    assert mount == {"name": "runs", "mountPath": "/mnt/lth", "readOnly": True, "subPath": "team-a"}
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True

    labels = pod["metadata"]["labels"]
    assert selects(objects["Service"]["spec"]["selector"], labels)
    assert selects(objects["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"], labels)
    assert objects["NetworkPolicy"]["spec"]["ingress"] == [{"ports": [{"port": 6006, "protocol": "TCP"}]}]
    operator = the_deployment([d for d in docs if d not in objects.values()])
    assert not selects(operator["spec"]["selector"]["matchLabels"], labels)  # neither owns the other's pods
    report = helm_python.lint(str(CHART), TENSORBOARD, namespace=NAMESPACE)
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


@pytest.mark.slow
def test_the_charts_tensorboard_command_serves_every_levels_curves(tmp_path: Path) -> None:
    """The container's command, run for real over a volume holding one run's event files."""
    from torch.utils.tensorboard import SummaryWriter

    expected = ["demo/tensorboard/00-main", "demo/tensorboard/01-random-reinit"]
    for run in expected:
        with SummaryWriter(str(tmp_path / "runs" / run)) as writer:
            for epoch in (1, 2, 3):
                writer.add_scalar("val/top1", 90.0 + epoch, epoch)
    pod = tensorboard_objects(render(TENSORBOARD))["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The volume where the pod mounts it; this machine's loopback and a free port.
    args = [a.replace("/mnt/lth", str(tmp_path)).replace("0.0.0.0", "127.0.0.1") for a in container["args"]]
    args = [f"--port={port}" if a.startswith("--port=") else a for a in args]
    tool = str(Path(sys.executable).with_name(container["command"][0]))
    server = subprocess.Popen([tool, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url, runs = f"http://127.0.0.1:{port}", None
    try:
        deadline = time.monotonic() + 60
        while runs != expected and time.monotonic() < deadline:
            time.sleep(0.5)
            with contextlib.suppress(OSError):
                runs = get_json(f"{url}/data/runs")
        assert runs == expected
        series = get_json(f"{url}/data/plugin/scalars/scalars?run={expected[1]}&tag=val/top1")
        assert [(step, value) for _, step, value in series] == [(1, 91.0), (2, 92.0), (3, 93.0)]
    finally:
        server.terminate()
        server.wait(timeout=20)
