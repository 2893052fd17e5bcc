"""Transfer runs on the emulator: the operator looks up spec.ticket.run before creating any child."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kubernetes import client
from safetensors.numpy import save_file

from lth.api import TicketSpec
from lth.api.naming import TICKET_FILE
from lth.api.observed import ObservedSource
from lth.api.validation import parse_spec
from lth.cluster import observe as cluster
from lth.cluster.children import objects
from lth.storage.tickets import describe
from tests.kube.cluster import Cluster
from tests.operator.helpers import Operator, Script, controllers, run_manifest, wait_for_phase
from tests.operator.test_operator import apply, children

PREPARED = {"format": "prepared", "path": "prepared/digits"}
"""Shards already on the volume: no SparkApplication, so only the level jobs run."""


def transfer_manifest(name: str, source: str) -> dict[str, Any]:
    return run_manifest(
        name,
        levels=0,
        dataset=PREPARED,
        ticket={"run": source},
        resources={"maxParallelJobs": 3},
    )


def commands(kube: Cluster, run: str) -> dict[str, list[str]]:
    """The trainer command of each of `run`'s PyTorchJobs, by job name."""
    custom = client.CustomObjectsApi(kube.api_client())
    group, version, plural = objects.CHILD_RESOURCES["PyTorchJob"]
    jobs = custom.list_namespaced_custom_object(
        group, version, "default", plural, label_selector=f"{objects.LABEL_RUN}={run}"
    )["items"]
    return {
        job["metadata"]["name"]: job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"][
            "containers"
        ][0]["command"]
        for job in jobs
    }


def refusal(run: dict[str, Any]) -> tuple[str, str]:
    conditions = {c["type"]: c for c in run["status"]["conditions"]}
    resolved, failed = conditions["TicketResolved"], conditions["Failed"]
    assert resolved["status"] == "False" and resolved["reason"] == failed["reason"], conditions
    return failed["reason"], failed["message"]


def test_transfer_from_a_finished_run_trains_the_ticket_and_its_controls(
    kube: Cluster, operator: Operator
) -> None:
    script = Script(top1=lambda run, level, branch: 70.0 if branch == "random-prune" else 76.0, ticks=1)
    with controllers(kube, script):
        apply(kube, run_manifest("source", levels=0, dataset=PREPARED))
        source = wait_for_phase(kube, "source", {"Succeeded", "Failed"}, operator=operator)
        assert source["status"]["phase"] == "Succeeded" and source["status"]["best"]["level"] == 0
        apply(kube, transfer_manifest("target", "source"))
        run = wait_for_phase(kube, "target", {"Succeeded", "Failed"}, operator=operator)
    status = run["status"]
    assert status["phase"] == "Succeeded", status
    assert {k: status["ticket"][k] for k in ("source", "run", "level", "density")} == {
        "source": "run source level 0",
        "run": "source",
        "level": 0,
        "density": 1.0,
    }
    assert sorted((row["name"], row["phase"]) for row in status["levels"]) == [
        ("target-level-00", "Succeeded"),
        ("target-level-00-dense", "Succeeded"),
        ("target-level-00-rprune", "Succeeded"),
    ]
    jobs = commands(kube, "target")
    assert sorted(jobs) == [row["name"] for row in sorted(status["levels"], key=lambda r: r["name"])]
    for command in jobs.values():
        start = command.index("--ticket-run-dir")
        assert command[start : start + 4] == [
            "--ticket-run-dir",
            "/mnt/lth/runs/source",
            "--ticket-level",
            "0",
        ]
    assert all("--ticket-run-dir" not in command for command in commands(kube, "source").values())
    table = kube.kubectl("get", "lotteryticketruns").stdout.splitlines()
    assert [line.split()[:2] for line in table[1:]] == [["source", "Succeeded"], ["target", "Succeeded"]]
    assert "TICKET" not in table[0]
    wide = kube.kubectl("get", "ltr", "target", "-o", "wide").stdout.splitlines()
    assert "TICKET" in wide[0] and "run source level 0" in wide[1]


def test_transfer_from_a_missing_run_fails_without_children(kube: Cluster, operator: Operator) -> None:
    apply(kube, transfer_manifest("orphan", "nowhere"))
    run = wait_for_phase(kube, "orphan", {"Succeeded", "Failed"}, operator=operator)
    reason, message = refusal(run)
    assert reason == "TicketNotFound"
    assert "LotteryTicketRun 'nowhere' (spec.ticket.run)" in message
    assert children(kube) == {}


def test_transfer_from_an_unfinished_run_fails_without_children(kube: Cluster, operator: Operator) -> None:
    with controllers(kube, Script(ticks=10_000)):  # the source never finishes
        apply(kube, run_manifest("slow", levels=0, dataset=PREPARED))
        wait_for_phase(kube, "slow", {"Training"}, operator=operator)
        apply(kube, transfer_manifest("eager", "slow"))
        run = wait_for_phase(kube, "eager", {"Succeeded", "Failed"}, operator=operator)
    reason, message = refusal(run)
    assert reason == "TicketNotReady"
    assert "LotteryTicketRun 'slow' (spec.ticket.run) is Training" in message
    assert set(children(kube)) == {"slow-level-00"}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("tickets/good", "described"),
        ("/mnt/lth/tickets/good", "described"),
        ("tickets/missing", ObservedSource(found=False)),
        ("tickets/empty", "problem"),
        ("/elsewhere/ticket", None),
    ],
)
def test_an_exported_ticket_is_read_where_the_operator_mounts_the_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, expected: Any
) -> None:
    good = tmp_path / "tickets" / "good"
    good.mkdir(parents=True)
    (tmp_path / "tickets" / "empty").mkdir()
    save_file({"fc.weight": np.array([True, False, False, False])}, str(good / "mask.safetensors"))
    save_file({"fc.weight": np.zeros(4, np.float32)}, str(good / "rewind.safetensors"))
    (good / TICKET_FILE).write_text(json.dumps(describe(good, {"architecture": "smallcnn"})))
    spec = run_manifest("t", levels=0, dataset=PREPARED, ticket={"path": path})["spec"]

    def observe() -> ObservedSource | None:
        custom = client.CustomObjectsApi()  # not called: a directory is read from the volume
        return cluster.observe_source(custom, "default", "t", parse_spec(spec), TicketSpec(path=path))

    assert observe() is None  # no volume: the trainer checks the directory
    monkeypatch.setattr(cluster, "STORAGE_ROOT", str(tmp_path))
    source = observe()
    if expected == "described":
        assert source is not None and source.found and source.description is not None
        assert source.description["density"] == 0.25
    elif expected == "problem":
        assert source is not None and source.found and "ticket.json" in source.problem
    else:
        assert source == expected
