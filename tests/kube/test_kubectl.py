"""The kubectl workflows a user runs, with the real kubectl binary against the emulator."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable

import pytest
import yaml
from kubernetes import client

from tests.kube.cluster import KUBECTL, Cluster
from tests.kube.resources import ROOT

EXAMPLE = ROOT / "examples" / "cpu-smallcnn.yaml"
RUN = "ltr/smallcnn-cpu"
STATUS = (
    '{"status": {"phase": "Training", "level": 3, "density": 0.512, "top1": 97.1,'
    ' "best": {"level": 2, "density": 0.64, "top1": 97.3, "summary": "L2 64%"},'
    ' "conditions": [{"type": "SpecAccepted", "status": "True", "reason": "Accepted",'
    ' "message": "", "lastTransitionTime": "2026-12-02T10:00:00Z"},'
    ' {"type": "Progressing", "status": "True", "reason": "ImagePullBackOff",'
    ' "message": "", "lastTransitionTime": "2026-12-02T10:00:00Z"}]}}'
)

pytestmark = pytest.mark.skipif(shutil.which(KUBECTL) is None, reason="kubectl is not installed")


@pytest.fixture
def applied(kube: Cluster) -> Cluster:
    kube.kubectl("apply", "-f", str(EXAMPLE))
    return kube


def output_lines(process: subprocess.Popen[str]) -> queue.Queue[str]:
    """The process's output lines, as they come."""
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    return lines


def lines_until(lines: queue.Queue[str], wanted: Callable[[str], bool], timeout: float = 20) -> list[str]:
    """The next lines up to the first `wanted` one (fails after `timeout` seconds)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not seen or not wanted(seen[-1]):
        try:
            seen.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            raise AssertionError(f"not seen in {timeout}s; output so far: {seen}") from None
    return seen


def patch_status(kube: Cluster, status: str = STATUS) -> None:
    kube.kubectl("patch", RUN, "--subresource=status", "--type=merge", "-p", status)


def test_apply_with_validation_creates_the_run(kube: Cluster) -> None:
    result = kube.kubectl("apply", "-f", str(EXAMPLE))  # --validate=strict is kubectl's default
    assert result.stdout.strip() == "lotteryticketrun.lth.dev/smallcnn-cpu created"
    assert "unchanged" in kube.kubectl("apply", "-f", str(EXAMPLE)).stdout


def test_get_yaml_shows_server_metadata_and_defaults(applied: Cluster) -> None:
    run = yaml.safe_load(applied.kubectl("get", RUN, "-o", "yaml").stdout)
    assert {"uid", "resourceVersion", "creationTimestamp", "generation"} <= set(run["metadata"])
    assert run["spec"]["dataset"]["resize"] == "squash"  # a schema default the example does not set


def test_patch_status_and_get_shows_the_printer_columns(applied: Cluster) -> None:
    patch_status(applied)
    header, row = applied.kubectl("get", "ltr").stdout.splitlines()
    assert header.split() == [
        "NAME",
        "PHASE",
        "LEVEL",
        "DENSITY",
        "TOP-1",
        "PROGRESS",
        "BEST",
        "REASON",
        "AGE",
    ]
    # The Progressing condition's reason, picked by a JSONPath filter as kubectl does.
    assert row.split()[:8] == [  # no status.progress: a blank cell
        "smallcnn-cpu",
        "Training",
        "3",
        "0.512",
        "97.1",
        "L2",
        "64%",
        "ImagePullBackOff",
    ]


def test_wait_for_jsonpath(applied: Cluster) -> None:
    waiting = applied.kubectl_background(
        "wait", RUN, "--for=jsonpath={.status.phase}=Training", "--timeout=20s"
    )
    time.sleep(0.5)  # let it see the run without the phase first
    patch_status(applied)
    assert waiting.wait(timeout=25) == 0, waiting.communicate()
    assert "condition met" in waiting.communicate()[0]


def test_get_watch_streams_changes(applied: Cluster) -> None:
    watching = applied.kubectl_background("get", "ltr", "-w")
    lines = output_lines(watching)
    try:
        first = lines_until(lines, lambda line: line.startswith("smallcnn-cpu"))
        patch_status(applied)
        changed = lines_until(lines, lambda line: "Training" in line)
    finally:
        watching.kill()
        watching.wait()
    assert first[0].split()[:2] == ["NAME", "PHASE"]
    assert changed[-1].split()[:2] == ["smallcnn-cpu", "Training"]


def test_delete_waits_for_a_finalizer_released_by_a_client(applied: Cluster) -> None:
    applied.kubectl("patch", RUN, "--type=merge", "-p", '{"metadata": {"finalizers": ["lth.dev/cleanup"]}}')
    deleting = applied.kubectl_background("delete", RUN, "--wait=true", "--timeout=20s")
    custom = client.CustomObjectsApi(applied.api_client())
    args = ("lth.dev", "v1alpha1", "default", "lotteryticketruns", "smallcnn-cpu")
    deadline = time.monotonic() + 20
    while "deletionTimestamp" not in custom.get_namespaced_custom_object(*args)["metadata"]:
        assert time.monotonic() < deadline, "kubectl delete did not mark the run"
        time.sleep(0.1)
    assert deleting.poll() is None  # still waiting on the finalizer
    custom.patch_namespaced_custom_object(*args, {"metadata": {"finalizers": []}})
    assert deleting.wait(timeout=25) == 0, deleting.communicate()
    assert "No resources found" in applied.kubectl("get", "ltr").stderr


def test_get_namespaces(kube: Cluster) -> None:
    rows = [line.split()[:2] for line in kube.kubectl("get", "ns").stdout.splitlines()]
    assert rows == [["NAME", "STATUS"], ["default", "Active"], ["kube-system", "Active"]]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            "training: {epochs: many}",
            'spec.training.epochs: Invalid value: "string": '
            'spec.training.epochs in body must be of type integer: "string"',
        ),
        (
            "training: {optimizer: rmsprop}",
            'spec.training.optimizer: Unsupported value: "rmsprop": supported values:',
        ),
        (
            "pruning: {fraction: 0}",
            "spec.pruning.fraction: Invalid value: 0: spec.pruning.fraction in body should be greater than 0",
        ),
    ],
)
def test_invalid_run_is_refused_naming_the_field(kube: Cluster, change: str, error: str) -> None:
    manifest = f"""
apiVersion: lth.dev/v1alpha1
kind: LotteryTicketRun
metadata: {{name: bad}}
spec:
  dataset: {{path: digits}}
  {change}
"""
    result = kube.kubectl("apply", "-f", "-", input=manifest, check=False)
    assert result.returncode == 1
    assert 'The LotteryTicketRun "bad" is invalid: ' in result.stderr and error in result.stderr


def test_unknown_field_is_refused_by_kubectls_strict_validation(kube: Cluster) -> None:
    manifest = (
        "apiVersion: lth.dev/v1alpha1\nkind: LotteryTicketRun\nmetadata: {name: bad}\n"
        "spec: {dataset: {path: digits, imageSise: 64}}\n"
    )
    result = kube.kubectl("apply", "-f", "-", input=manifest, check=False)
    assert result.returncode == 1
    assert 'strict decoding error: unknown field "spec.dataset.imageSise"' in result.stderr


JOB = """
apiVersion: batch/v1
kind: Job
metadata: {name: run-export}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: export, image: trainer, command: [lth, report]}]
"""


def test_get_jobs_prints_what_the_servers_job_printer_prints(kube: Cluster) -> None:
    """printJob: Status from the conditions (SuccessCriteriaMet alone still reads Running on 1.32),
    Completions, Duration from startTime to completionTime."""
    assert kube.kubectl("apply", "-f", "-", input=JOB).stdout.strip() == "job.batch/run-export created"
    header, row = kube.kubectl("get", "jobs").stdout.splitlines()
    assert header.split() == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert row.split()[:3] == ["run-export", "Running", "0/1"]
    condition = {"status": "True", "lastTransitionTime": "2026-12-02T10:01:40Z"}
    status = {
        "startTime": "2026-12-02T10:00:00Z",
        "succeeded": 1,
        "conditions": [{"type": "SuccessCriteriaMet", **condition}],
    }
    kube.kubectl(
        "patch",
        "job",
        "run-export",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    assert kube.kubectl("get", "jobs").stdout.splitlines()[1].split()[:3] == ["run-export", "Running", "1/1"]
    status["conditions"].append({"type": "Complete", **condition})
    status["completionTime"] = "2026-12-02T10:01:40Z"
    kube.kubectl(
        "patch",
        "job",
        "run-export",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    row = kube.kubectl("get", "job", "run-export", "-o", "wide").stdout.splitlines()[1].split()
    assert row[:4] == ["run-export", "Complete", "1/1", "100s"]
    assert row[5:7] == ["export", "trainer"] and row[7].startswith("batch.kubernetes.io/controller-uid=")
    assert "job.batch/run-export" in kube.kubectl("get", "all").stdout


def test_secrets_and_config_maps_as_the_server_stores_and_prints_them(kube: Cluster) -> None:
    """printSecret (Type, Data: the number of keys) and printConfigMap (Data: data + binaryData);
    stringData merged into base64 data, type Opaque by default."""
    literal = kube.kubectl(
        "create",
        "secret",
        "generic",
        "s3",
        "--from-literal=AWS_ACCESS_KEY_ID=AKIA",
        "--dry-run=client",
        "-o",
        "json",
    ).stdout
    assert kube.kubectl("create", "-f", "-", input=literal).stdout.strip() == "secret/s3 created"
    # kubectl's own `create secret` posts protobuf: 415, as `kubectl create namespace` (README).
    direct = kube.kubectl("create", "secret", "generic", "s4", "--from-literal=A=1", check=False)
    assert direct.returncode != 0 and "application/vnd.kubernetes.protobuf" in direct.stderr
    written = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls"}, "type": "kubernetes.io/tls"}
    written["stringData"] = {"tls.crt": "c", "tls.key": "k"}
    kube.kubectl("apply", "-f", "-", input=json.dumps(written))
    stored = json.loads(kube.kubectl("get", "secret", "tls", "-o", "json").stdout)
    assert stored["data"] == {"tls.crt": "Yw==", "tls.key": "aw=="} and "stringData" not in stored
    header, *rows = kube.kubectl("get", "secrets").stdout.splitlines()
    assert header.split() == ["NAME", "TYPE", "DATA", "AGE"]
    assert [row.split()[:3] for row in rows] == [["s3", "Opaque", "1"], ["tls", "kubernetes.io/tls", "2"]]
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}}
    config.update(data={"A": "1"}, binaryData={"B": "AA=="})
    kube.kubectl("apply", "-f", "-", input=json.dumps(config))
    header, row = kube.kubectl("get", "cm").stdout.splitlines()
    assert header.split() == ["NAME", "DATA", "AGE"] and row.split()[:2] == ["cfg", "2"]


def test_logs_of_a_container_with_tail(kube: Cluster) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {
            "nodeName": "node-1",
            "containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "x"}],
        },
    }
    kube.add(pod)
    running = {"running": {"startedAt": "2026-12-02T10:00:00Z"}}
    statuses = [{"name": n, "containerID": f"containerd://{n}", "state": running} for n in ("a", "b")]
    kube.kubectl(
        "patch",
        "pod",
        "p",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Running", "containerStatuses": statuses}}),
    )
    kube.api.container_logs = lambda namespace, name, container: (
        f"{container} 1\n{container} 2\n{container} 3\n"
    )
    assert kube.kubectl("logs", "p", "-c", "b", "--tail", "2").stdout == "b 2\nb 3\n"
    waiting = [{"name": "a", "state": {"waiting": {"reason": "ContainerCreating"}}}]
    kube.kubectl(
        "patch",
        "pod",
        "p",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"containerStatuses": waiting}}),
    )
    result = kube.kubectl("logs", "p", "-c", "a", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        'Error from server (BadRequest): container "a" in pod "p" is waiting to start: ContainerCreating'
    )
