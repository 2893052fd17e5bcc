"""After the search and during it, on the emulator: the export Job, and progress within a level.

The real operator process and kubectl; the stand-in Job controller runs the export Job's pod,
the stand-in training operator the levels, whose master containers print the trainer's
`lth-progress` lines into the kubelet's log (read back through the API's pods/log).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from kubernetes import client

from tests.kube.cluster import Cluster
from tests.operator.helpers import Operator, Script, controllers, get_run, run_manifest, wait_for_phase
from tests.operator.test_operator import apply


def wait_for(
    kube: Cluster, name: str, ready: Callable[[dict[str, Any]], bool], operator: Operator, timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = get_run(kube, name).get("status") or {}
        if ready(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: {status}\n{operator.output()[-3000:]}")
        time.sleep(0.2)


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status.get("conditions", []) if c["type"] == type_)


def export_jobs(kube: Cluster) -> dict[str, dict[str, Any]]:
    batch = client.BatchV1Api(kube.api_client())
    listed = json.loads(batch.list_namespaced_job("default", _preload_content=False).data)
    return {job["metadata"]["name"]: job for job in listed["items"]}


def test_an_ended_search_is_exported_by_a_job_that_goes_with_the_run(
    kube: Cluster, operator: Operator
) -> None:
    with controllers(kube, Script()):
        apply(kube, run_manifest("shipped", levels=1, export={"url": "s3://tickets/shipped"}))
        wait_for_phase(kube, "shipped", {"Succeeded"}, operator=operator)
        status = wait_for(
            kube, "shipped", lambda s: (s.get("export") or {}).get("phase") == "Succeeded", operator
        )
        assert status["phase"] == "Succeeded"
        exported = condition(status, "Exported")
        assert (exported["status"], exported["reason"]) == ("True", "Exported")
        assert status["export"]["path"] == "runs/shipped/ticket"
        assert status["export"]["url"] == "s3://tickets/shipped"
        job = export_jobs(kube)["shipped-export"]
        assert job["metadata"]["ownerReferences"][0]["name"] == "shipped"
        command = job["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[:3] == ["lth", "report", "/mnt/lth/runs/shipped"] and "--upload" in command
        jobs = kube.kubectl("get", "jobs").stdout.splitlines()
        assert jobs[1].split()[:3] == ["shipped-export", "Complete", "1/1"], jobs
        # The run's status reached the pod: what the export writes from.
        env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert json.loads(env["LTH_STATUS"].replace("$$", "$"))["phase"] == "Succeeded"

        kube.kubectl("delete", "ltr", "shipped", "--wait=true", "--timeout=20s")
        core = client.CoreV1Api(kube.api_client())
        deadline = time.monotonic() + 20
        while (
            export_jobs(kube)
            or core.list_namespaced_pod(
                "default", label_selector="batch.kubernetes.io/job-name=shipped-export"
            ).items
        ):
            assert time.monotonic() < deadline, export_jobs(kube)
            time.sleep(0.2)


def test_a_failing_export_is_retried_and_never_fails_the_run(kube: Cluster, operator: Operator) -> None:
    script = Script(fail={"flaky-export": 9})
    with controllers(kube, script, job_backoff=0.1):
        apply(kube, run_manifest("flaky", levels=0, retry={"export": {"backoffLimit": 1}}))
        status = wait_for(kube, "flaky", lambda s: (s.get("export") or {}).get("phase") == "Failed", operator)
    assert status["phase"] == "Succeeded" and status["export"]["attempts"] == 2
    exported = condition(status, "Exported")
    assert (exported["status"], exported["reason"]) == ("False", "ExportFailed")
    assert "Job flaky-export failed after 2 attempt(s)" in exported["message"]
    assert "Job has reached the specified backoff limit" in exported["message"]  # the Job controller's words
    assert not [c for c in status["conditions"] if c["type"] == "Failed"]
    assert len(script.uids["flaky-export"]) == 2  # a new Job per attempt


def test_a_running_level_shows_its_epoch_in_the_status_kubectl_lth_and_metrics(
    kube: Cluster, operator: Operator
) -> None:
    operator.resync_every(1)
    script = Script(hold={"steady-level-00"})
    with controllers(kube, script):
        apply(kube, run_manifest("steady", levels=1))

        def epochs_in(status: dict[str, Any]) -> bool:
            rows = [r for r in status.get("levels", []) if r["level"] == 0]
            return bool(rows) and (rows[0].get("progress") or {}).get("epoch", 0) >= 3

        status = wait_for(kube, "steady", epochs_in, operator)
        row = status["levels"][0]
        assert row["phase"] == "Running" and row["progress"]["epochs"] == 90
        assert row["progress"]["imagesPerSecond"] == 2900.0 and "estimatedFinish" in row["progress"]
        assert status["progress"].startswith("L0 ") and status["progress"].endswith("/90")
        table = kube.kubectl("get", "ltr", "steady").stdout.splitlines()
        assert "PROGRESS" in table[0] and re.search(r" L0 \d+/90 ", table[1]), table
        shown = subprocess.run(
            [sys.executable, "-m", "lth", "status", "steady"],
            capture_output=True,
            text=True,
            env=kube.env,
            check=True,
        ).stdout
        assert "running " in shown and "/90" in shown and "images/s" in shown, shown
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics").read().decode()
        assert 'lth_run_level{name="steady",namespace="default"} 0.0' in metrics
        assert 'lth_run_images_per_second{name="steady",namespace="default"} 2900.0' in metrics
        script.hold.clear()
        done = wait_for_phase(kube, "steady", {"Succeeded"}, operator=operator)["status"]
    assert all("progress" not in row for row in done["levels"]) and "progress" not in done
