"""The operator on the emulator: the real kopf process, real kubectl, simulated child controllers."""

from __future__ import annotations

import threading
import time
import urllib.request
from typing import Any

import yaml
from kubernetes import client

from lth.cluster.children import objects
from tests.kube.cluster import Cluster
from tests.operator.helpers import (
    RUNS,
    Operator,
    Script,
    controllers,
    get_run,
    run_manifest,
    wait_for_phase,
)

SPARK = objects.CHILD_RESOURCES["SparkApplication"]
PYTORCH = objects.CHILD_RESOURCES["PyTorchJob"]


def apply(kube: Cluster, *documents: dict[str, Any]) -> None:
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))


def children(kube: Cluster, namespace: str = "default") -> dict[str, dict[str, Any]]:
    custom = client.CustomObjectsApi(kube.api_client())
    found = {}
    for group, version, plural in (SPARK, PYTORCH):
        for obj in custom.list_namespaced_custom_object(group, version, namespace, plural)["items"]:
            found[obj["metadata"]["name"]] = obj
    return found


def events(kube: Cluster, name: str) -> list[str]:
    core = client.CoreV1Api(kube.api_client())
    items = core.list_namespaced_event("default").items
    return [e.reason for e in items if e.involved_object.name == name]


def test_happy_path_reaches_succeeded_with_levels_best_and_events(kube: Cluster, operator: Operator) -> None:
    scores = {0: 76.0, 1: 75.6, 2: 74.0}
    script = Script(top1=lambda run, level, branch: scores[level] if branch == "main" else 61.0)
    with controllers(kube, script):
        apply(
            kube,
            run_manifest(
                "happy", levels=2, pruning={"controls": {"branches": ["random-reinit"], "levels": [2]}}
            ),
        )
        run = wait_for_phase(kube, "happy", {"Succeeded", "Failed"}, operator=operator)
    status = run["status"]
    assert status["phase"] == "Succeeded", status
    assert [(row["level"], row["branch"], row["top1"]) for row in status["levels"]] == [
        (0, "main", 76.0),
        (1, "main", 75.6),
        (2, "main", 74.0),
        (2, "random-reinit", 61.0),
    ]
    assert status["best"]["level"] == 1 and status["denseTop1"] == 76.0
    assert {row["name"] for row in status["levels"]} == {
        "happy-level-00",
        "happy-level-01",
        "happy-level-02",
        "happy-level-02-reinit",
    }
    table = kube.kubectl("get", "ltr").stdout
    header, line = table.splitlines()[:2]
    assert header.split()[:7] == ["NAME", "PHASE", "LEVEL", "DENSITY", "TOP-1", "PROGRESS", "BEST"]
    assert line.split()[:5] == ["happy", "Succeeded", "2", "0.64", "74"]
    reasons = events(kube, "happy")
    assert {"Created", "LevelFinished", "Succeeded"} <= set(reasons)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics").read().decode()
    assert 'lth_runs{phase="Succeeded"} 1.0' in metrics
    assert 'lth_level_duration_seconds_count{branch="main"} 3.0' in metrics
    assert urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/healthz").status == 200
    for child in children(kube).values():
        owner = child["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "LotteryTicketRun",
            "happy",
            run["metadata"]["uid"],
        )


def test_spark_application_failure_fails_the_run(kube: Cluster, operator: Operator) -> None:
    with controllers(kube, Script(fail={"sparky-prep": 9})):
        apply(kube, run_manifest("sparky", retry={"preprocessing": {"backoffLimit": 1}}))
        run = wait_for_phase(kube, "sparky", {"Succeeded", "Failed"}, operator=operator)
    failed = next(c for c in run["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PreprocessingFailed" and "OOMKilled" in failed["message"]
    assert run["status"]["preprocessing"]["attempts"] == 2
    assert set(children(kube)) == {"sparky-prep"}  # no training job was started


def test_pytorchjob_failing_after_its_backoff_fails_the_run(kube: Cluster, operator: Operator) -> None:
    script = Script(fail={"flaky-level-01": 9})
    with controllers(kube, script):
        apply(kube, run_manifest("flaky", retry={"training": {"backoffLimit": 1}}))
        run = wait_for_phase(kube, "flaky", {"Succeeded", "Failed"}, operator=operator)
    failed = next(c for c in run["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "LevelFailed"
    assert "flaky-level-01" in failed["message"] and "2 attempt" in failed["message"]
    assert len(script.uids["flaky-level-01"]) == 2  # recreated once, then given up
    assert "flaky-level-02" not in children(kube)
    assert "Retrying" in events(kube, "flaky")


def test_a_trainer_that_reports_bad_input_fails_the_run_at_once_with_its_reason(
    kube: Cluster, operator: Operator
) -> None:
    reason = "/mnt/lth/runs/badin/levels/00/final.safetensors: truncated (no safetensors header)"
    script = Script(bad_input={"badin-level-01": reason})
    with controllers(kube, script):
        apply(kube, run_manifest("badin", retry={"training": {"backoffLimit": 3}}))
        run = wait_for_phase(kube, "badin", {"Succeeded", "Failed"}, operator=operator)
    failed = next(c for c in run["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "LevelFailed"
    assert "failed on its input (not retried)" in failed["message"]
    assert failed["message"].endswith("1 Master replica(s) failed: bad input: " + reason)
    assert len(script.uids["badin-level-01"]) == 1  # not recreated
    assert "Retrying" not in events(kube, "badin")


def test_child_deleted_by_hand_ends_the_run_with_a_clear_condition(kube: Cluster, operator: Operator) -> None:
    script = Script(ticks=10_000)  # children never finish on their own
    with controllers(kube, script):
        apply(kube, run_manifest("handsoff"))
        deadline = time.monotonic() + 30
        while "handsoff-prep" not in children(kube):
            assert time.monotonic() < deadline, operator.output()[-3000:]
            time.sleep(0.1)
        kube.kubectl("delete", "sparkapplication", "handsoff-prep")
        run = wait_for_phase(kube, "handsoff", {"Failed"}, operator=operator)
    failed = next(c for c in run["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "ChildDeleted" and "handsoff-prep" in failed["message"]
    assert children(kube) == {}


def test_frozen_spec_change_is_refused_with_a_condition(kube: Cluster, operator: Operator) -> None:
    with controllers(kube, Script(ticks=10_000)):
        apply(kube, run_manifest("steady"))
        wait_for_phase(kube, "steady", {"Preprocessing"}, operator=operator)
        kube.kubectl("patch", "ltr", "steady", "--type=merge", "-p", '{"spec":{"training":{"epochs":9}}}')
        deadline = time.monotonic() + 30
        while True:
            conditions = {c["type"]: c for c in get_run(kube, "steady")["status"]["conditions"]}
            if conditions["SpecAccepted"]["status"] == "False":
                break
            assert time.monotonic() < deadline, operator.output()[-3000:]
            time.sleep(0.1)
    refused = conditions["SpecAccepted"]
    assert refused["reason"] == "FrozenFieldChanged" and "spec.training.epochs (4 -> 9)" in refused["message"]
    assert refused["observedGeneration"] == 2
    run = get_run(kube, "steady")
    assert (
        run["status"]["acceptedSpec"]["training"]["epochs"] == 4 and run["status"]["phase"] == "Preprocessing"
    )
    assert "SpecRefused" in events(kube, "steady")


def test_operator_killed_at_every_state_resumes_without_duplicates(kube: Cluster, operator: Operator) -> None:
    script = Script(ticks=3)
    stop = threading.Event()
    kills: list[str] = []

    def killer() -> None:
        """Kill and restart the operator whenever the run moves on."""
        last: tuple[Any, ...] = ()
        while not stop.is_set():
            try:
                status = get_run(kube, "phoenix").get("status", {})
            except client.ApiException:
                status = {}
            state = (status.get("phase"), tuple((r["name"], r["phase"]) for r in status.get("levels", [])))
            if state != last and status:
                last = state
                kills.append(str(state[0]))
                operator.kill()
                operator.start()
            time.sleep(0.05)

    with controllers(kube, script):
        apply(kube, run_manifest("phoenix", levels=2))
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        try:
            run = wait_for_phase(kube, "phoenix", {"Succeeded", "Failed"}, timeout=120, operator=operator)
        finally:
            stop.set()
            thread.join()
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert operator.starts >= 5 and {"Preprocessing", "Training"} <= set(kills)
    assert all(len(uids) == 1 for uids in script.uids.values()), script.uids  # each child created once
    assert sorted(children(kube)) == [
        "phoenix-level-00",
        "phoenix-level-01",
        "phoenix-level-02",
        "phoenix-prep",
    ]


def test_deleting_the_run_removes_its_children(kube: Cluster, operator: Operator) -> None:
    with controllers(kube, Script(ticks=10_000)):
        apply(kube, run_manifest("doomed"))
        deadline = time.monotonic() + 30
        while "doomed-prep" not in children(kube):
            assert time.monotonic() < deadline, operator.output()[-3000:]
            time.sleep(0.1)
        kube.kubectl("delete", "ltr", "doomed", "--wait=true", "--timeout=20s")
        deadline = time.monotonic() + 20
        while children(kube):
            assert time.monotonic() < deadline, children(kube)
            time.sleep(0.1)


def test_twenty_runs_at_once_complete_without_crossing(kube: Cluster, operator: Operator) -> None:
    names = [f"many-{i:02d}" for i in range(20)]
    script = Script(top1=lambda run, level, branch: 50.0 + int(run.split("-")[1]), ticks=1)
    with controllers(kube, script):
        apply(kube, *(run_manifest(name, levels=1) for name in names))
        runs = [
            wait_for_phase(kube, name, {"Succeeded", "Failed"}, timeout=120, operator=operator)
            for name in names
        ]
    for name, run in zip(names, runs, strict=True):
        status = run["status"]
        assert status["phase"] == "Succeeded", (name, status)
        assert status["denseTop1"] == 50.0 + int(name.split("-")[1])
        assert all(row["name"].startswith(f"{name}-level-") for row in status["levels"])
    owners = {
        obj["metadata"]["name"]: obj["metadata"]["ownerReferences"][0]["name"]
        for obj in children(kube).values()
    }
    assert len(owners) == 20 * 3 and all(child.startswith(owner + "-") for child, owner in owners.items())
    assert RUNS[2] == "lotteryticketruns"
