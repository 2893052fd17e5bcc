"""What a run may name, and what its status and events may show: the operator as the chart runs
it, on the emulator (issue 23)."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client

from lth.api.defaults import ENV_VAR, WorkloadDefaults
from tests.kube.cluster import Cluster
from tests.operator.helpers import Operator, Script, controllers, run_manifest, wait_for_phase
from tests.operator.test_operator import apply, children

PASSWORD = "hunter2-not-for-logs"


def _messages(kube: Cluster, name: str, run: dict[str, Any]) -> str:
    """Everything a user reads of the run: its status and its events."""
    core = client.CoreV1Api(kube.api_client())
    items = core.list_namespaced_event("default").items
    events = [e.message or "" for e in items if e.involved_object.name == name]
    return json.dumps(run["status"]) + "\n".join(events)


def test_a_run_naming_an_image_or_secret_the_chart_does_not_allow_is_refused(
    kube: Cluster, operator: Operator
) -> None:
    operator.kill()
    policy = {"allowedImages": ["registry.example/ml/*"], "allowedSecrets": ["s3-*"]}
    operator.env[ENV_VAR] = json.dumps({**WorkloadDefaults().to_wire(), **policy})
    operator.start()
    with controllers(kube, Script()):
        refused = run_manifest(
            "intruder",
            resources={"image": "docker.io/evil/miner:latest"},
            export={"url": "s3://tickets/x", "secretName": "prod-db-password"},
        )
        allowed = run_manifest("member", levels=0)  # the chart's own images: always allowed
        apply(kube, refused, allowed)
        run = wait_for_phase(kube, "intruder", {"Failed", "Succeeded"}, operator=operator)
        wait_for_phase(kube, "member", {"Succeeded"}, operator=operator)
    failed = next(c for c in run["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert "spec.resources.image: image 'docker.io/evil/miner:latest' is not allowed" in failed["message"]
    assert "workloads.allowedImages" in failed["message"]
    assert "spec.export.secretName: Secret 'prod-db-password' is not one a run may use" in failed["message"]
    assert not [name for name in children(kube) if name.startswith("intruder")]
    assert "member-level-00" in children(kube)
    with controllers(kube, Script()):  # an allowed image and Secret are accepted
        export = {"url": "s3://tickets/x", "secretName": "s3-creds"}
        image = {"image": "registry.example/ml/trainer:2"}
        apply(kube, run_manifest("named", resources=image, export=export))
        accepted = wait_for_phase(kube, "named", {"Training", "Failed"}, operator=operator)
    assert accepted["status"]["phase"] == "Training", accepted["status"]["conditions"]


def test_an_env_value_from_a_secret_reaches_the_pods_by_reference_only(
    kube: Cluster, operator: Operator
) -> None:
    env = {
        "NCCL_SOCKET_IFNAME": "eth0",
        "WANDB_API_KEY": {"valueFrom": {"secretKeyRef": {"name": "wandb", "key": "apiKey"}}},
    }
    core = client.CoreV1Api(kube.api_client())
    core.create_namespaced_secret(
        "default", {"metadata": {"name": "wandb"}, "stringData": {"apiKey": PASSWORD}, "type": "Opaque"}
    )
    with controllers(kube, Script()):
        apply(kube, run_manifest("byref", levels=0, resources={"gpusPerPod": 0, "env": env}))
        run = wait_for_phase(kube, "byref", {"Succeeded", "Failed"}, operator=operator)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    job = children(kube)["byref-level-00"]
    container = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert container["env"] == [
        {"name": "NCCL_SOCKET_IFNAME", "value": "eth0"},
        {"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "apiKey"}}},
    ]
    assert PASSWORD not in json.dumps(job) + _messages(kube, "byref", run)


def test_a_childs_message_with_credentials_reaches_conditions_and_events_redacted(
    kube: Cluster, operator: Operator
) -> None:
    """A trainer failing on a ticket URL that carries a password, in its own words: the run's
    Failed condition and its events say why, without the password."""
    reason = f"--ticket-url: https://reader:{PASSWORD}@tickets.example/t/ticket.json: cannot download (403)"
    with controllers(kube, Script(bad_input={"leaky-level-00": reason})):
        apply(kube, run_manifest("leaky"))
        run = wait_for_phase(kube, "leaky", {"Succeeded", "Failed"}, operator=operator)
    failed = next(c for c in run["status"]["conditions"] if c["type"] == "Failed")
    assert "https://***@tickets.example/t/ticket.json: cannot download" in failed["message"]
    assert PASSWORD not in _messages(kube, "leaky", run)
