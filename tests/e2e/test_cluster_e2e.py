"""End to end on the emulator: the real operator's manifests, executed.

The simulated Spark and training controllers run the SparkApplication's
main file and arguments under spark-submit and the PyTorchJob's container
command with the training operator's environment, the storage volume mapped
to a temp folder. A tiny run must reach Succeeded with real numbers in its
status, the same numbers `lth run` gets on the same spec and seed.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.executing import ExecutingWorkload
from tests.kube.cluster import Cluster
from tests.operator.helpers import wait_for_phase
from tests.operator.plugin import Operator
from tests.operator.simulators import ChildControllers
from tests.tiny import TINY_TRAINING

MOUNT = "/mnt/lth"

RUN: dict[str, Any] = {
    "apiVersion": "lth.dev/v1alpha1",
    "kind": "LotteryTicketRun",
    "metadata": {"name": "e2e"},
    "spec": {
        "dataset": {
            "format": "imagenet",
            "path": "digits",
            "imageSize": 28,
            "classes": ["n00000000", "n00000001", "n00000007"],
        },
        "preprocessing": {"shardSizeMb": 1},
        "model": {"arch": "smallcnn"},
        "training": {**TINY_TRAINING, "batchSize": 30, "seed": 3},
        "pruning": {"levels": 1, "rewindTo": "0", "controls": {"branches": ["random-prune"]}},
        "resources": {"gpusPerPod": 0},
        "storage": {"mountPath": MOUNT},
    },
}


TRANSFER: dict[str, Any] = {
    **RUN,
    "metadata": {"name": "moved"},
    "spec": {
        **RUN["spec"],
        "dataset": {"format": "prepared", "path": "runs/e2e/data", "imageSize": 28},
        "ticket": {"run": "e2e", "level": 1, "head": "keep", "controls": ["dense"]},
        "pruning": {"rewindTo": "0"},
    },
}


def rows(status: dict[str, Any]) -> list[tuple[int, str, float, float]]:
    return sorted((r["level"], r["branch"], round(r["density"], 6), r["top1"]) for r in status["levels"])


def test_a_tiny_run_on_the_emulator_equals_lth_run(
    kube: Cluster, operator: Operator, digits: Path, tmp_path: Path
) -> None:
    storage = tmp_path / "volume"
    (storage).mkdir()
    (storage / "digits").symlink_to(digits)
    workload = ExecutingWorkload(MOUNT, storage, tmp_path)
    try:
        with ChildControllers(kube.api_client(), workload, tick=0.2):
            kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(RUN))
            run = wait_for_phase(kube, "e2e", {"Succeeded", "Failed"}, timeout=400, operator=operator)
            # Its ticket, transferred by a second run (on the same shards, to spare a Spark job).
            kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(TRANSFER))
            moved = wait_for_phase(kube, "moved", {"Succeeded", "Failed"}, timeout=200, operator=operator)
    finally:
        workload.stop()
    assert moved["status"]["phase"] == "Succeeded", (
        moved["status"],
        {n: (tmp_path / f"{n}.log").read_text()[-2000:] for n in workload.commands if n.startswith("moved")},
    )
    assert moved["status"]["ticket"]["source"] == "run e2e level 1"
    source_mask = storage / "runs" / "e2e" / "levels" / "01" / "mask.safetensors"
    moved_mask = storage / "runs" / "moved" / "levels" / "00" / "mask.safetensors"
    assert moved_mask.read_bytes() == source_mask.read_bytes()  # the same classes: the head is kept
    assert workload.commands["moved-level-00"].count("--ticket-run-dir") == 1
    status = run["status"]
    assert status["phase"] == "Succeeded", (
        status,
        {n: (tmp_path / f"{n}.log").read_text()[-2000:] for n in workload.commands},
    )
    assert set(workload.commands) == {
        "e2e-prep",
        "e2e-level-00",
        "e2e-level-01",
        "e2e-level-01-rprune",
        "moved-level-00",
        "moved-level-00-dense",
    }
    assert (storage / "runs" / "e2e" / "data" / "manifest.json").exists()
    assert all(
        r["top1"] > 40 and r["durationSeconds"] > 0 for r in status["levels"]
    )  # 3 classes: chance is 33 %

    local = tmp_path / "local"
    local.mkdir()
    (local / "digits").symlink_to(digits)
    spec_file = local / "run.yaml"
    spec_file.write_text(yaml.safe_dump(copy.deepcopy(RUN)))
    subprocess.run(
        [sys.executable, "-m", "lth", "run", str(spec_file), "--root", str(local)],
        check=True,
        capture_output=True,
    )
    local_status = yaml.safe_load((local / "runs" / "e2e" / "status.json").read_text())
    assert rows(local_status) == rows(status)
