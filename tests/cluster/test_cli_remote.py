"""`lth status` and `lth watch` against a cluster (the emulator) show what they show for a run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from lth.api import RunStatus
from tests.kube.cluster import Cluster, write_kubeconfig
from tests.operator.helpers import run_manifest
from tests.operator.plugin import free_port

STATUS: dict[str, Any] = {
    "phase": "Training",
    "level": 2,
    "density": 0.64,
    "top1": 75.6,
    "denseTop1": 76.0,
    "best": {"level": 1, "density": 0.8, "top1": 75.6, "summary": "L1 80%"},
    "levels": [
        {"name": "far-level-00", "level": 0, "branch": "main", "phase": "Succeeded", "attempts": 1,
         "density": 1.0, "top1": 76.0},
        {"name": "far-level-01", "level": 1, "branch": "main", "phase": "Succeeded", "attempts": 1,
         "density": 0.8, "top1": 75.6},
        {"name": "far-level-02", "level": 2, "branch": "main", "phase": "Running", "attempts": 1,
         "density": 0.64},
    ],
    "conditions": [
        {"type": "SpecAccepted", "status": "True", "reason": "Accepted", "message": "spec accepted",
         "lastTransitionTime": "2026-12-02T10:00:00Z"},
        {"type": "Progressing", "status": "True", "reason": "Training", "message": "level 2 of at most 3",
         "lastTransitionTime": "2026-12-02T10:00:00Z"},
    ],
}  # fmt: skip


def lth(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lth", *args],
        env={**env, "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def far(kube: Cluster) -> Cluster:
    """A run named `far` with a status, as the operator would have written it."""
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(run_manifest("far", levels=3)))
    patch = json.dumps({"status": STATUS})
    kube.kubectl("patch", "ltr", "far", "--subresource=status", "--type=merge", "-p", patch)
    return kube


def test_status_of_a_cluster_run_is_the_run_directorys(far: Cluster, tmp_path: Path) -> None:
    remote = lth(far.env, "status", "far")
    assert remote.returncode == 0, remote.stderr
    run_dir = tmp_path / "runs" / "far"
    run_dir.mkdir(parents=True)
    (run_dir / "status.json").write_text(RunStatus.model_validate(STATUS).model_dump_json(by_alias=True))
    local = lth(far.env, "status", str(run_dir))
    assert local.returncode == 0, local.stderr
    assert remote.stdout == local.stdout
    assert "phase Training, level 2" in remote.stdout and "75.60" in remote.stdout
    other_namespace = lth(far.env, "status", "far", "-n", "elsewhere")
    assert (other_namespace.returncode, other_namespace.stderr) == (
        1,
        "lth status: lotteryticketrun elsewhere/far not found\n",
    )


def test_watch_redraws_until_the_run_ends(far: Cluster) -> None:
    watching = subprocess.Popen(
        [sys.executable, "-m", "lth", "watch", "far", "--interval", "0.2"],
        env={**far.env, "COLUMNS": "120"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)
    assert watching.poll() is None  # still training
    done = {
        **STATUS,
        "phase": "Succeeded",
        "levels": [{**r, "phase": "Succeeded", "top1": 75.0} for r in STATUS["levels"]],
    }
    far.kubectl(
        "patch", "ltr", "far", "--subresource=status", "--type=merge", "-p", json.dumps({"status": done})
    )
    out, err = watching.communicate(timeout=30)
    assert watching.returncode == 0, err
    assert "phase Succeeded" in out


def test_one_line_errors(kube: Cluster, tmp_path: Path) -> None:
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(run_manifest("fresh", levels=1)))
    missing = lth(kube.env, "status", "ghost")
    assert (missing.returncode, missing.stderr) == (
        1,
        "lth status: lotteryticketrun default/ghost not found\n",
    )
    fresh = lth(kube.env, "watch", "fresh")
    assert fresh.returncode == 1
    assert (
        fresh.stderr
        == "lth watch: lotteryticketrun default/fresh has no status yet: is the lth operator running?\n"
    )
    nowhere = write_kubeconfig(tmp_path / "nowhere", f"http://127.0.0.1:{free_port()}")
    unreachable = lth({**os.environ, "KUBECONFIG": str(nowhere)}, "status", "far")
    assert unreachable.returncode == 1 and len(unreachable.stderr.splitlines()) == 1
    assert unreachable.stderr.startswith("lth status: cannot reach the cluster at http://127.0.0.1:")
    no_dir = lth(kube.env, "status", str(tmp_path / "runs" / "none"))
    assert no_dir.returncode == 1 and "no such file; is" in no_dir.stderr
    mixed = lth(kube.env, "status", "runs/far", "-n", "ml")
    assert mixed.returncode == 1 and "-n/--namespace is for a run on the cluster" in mixed.stderr
