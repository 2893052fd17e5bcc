"""End to end on the emulator: the real operator's children, executed by the upstream stand-ins.

The stand-in Spark operator submits the SparkApplication (its driver pod runs the job
with spark-submit, in local mode); the stand-in Kubeflow Trainer v2 turns each level's
TrainJob into a JobSet, whose one Indexed Job has two pods with Trainer's PET_* environment
(node ranks from their completion index, the master by its JobSet hostname); the transfer
run's levels are PyTorchJobs, which the stand-in training operator turns into a master and a
worker pod with upstream's environment and init container; the stand-in kubelet admits each
container as the real one would and runs its process under the uid and gid its pod gets,
with the run's volume, an NFS-like directory that ignores fsGroup, mounted where the pod
says. A tiny run must reach Succeeded with the numbers `lth run` gets on the same spec and
seed, and export the same ticket bytes.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lth.storage.objectstore import fetch_ticket
from tests.kube.cluster import Cluster
from tests.operator.helpers import chart_training_runtime, get_run, wait_for_phase
from tests.operator.plugin import Operator
from tests.standins import Cluster as StandIns
from tests.standins import ProcessRuntime
from tests.standins.images import usable_by_other_users
from tests.tiny import TINY_TRAINING

MOUNT = "/mnt/lth"
WHY_NOT = usable_by_other_users()
pytestmark = pytest.mark.skipif(bool(WHY_NOT), reason=f"pods cannot run as other users here: {WHY_NOT}")

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
        "training": {**TINY_TRAINING, "batchSize": 32, "seed": 3},
        "pruning": {"levels": 1, "rewindTo": "0", "controls": {"branches": ["random-prune"]}},
        # Two pods of two processes each, as TrainJobs (Kubeflow Trainer v2).
        "resources": {"gpusPerPod": 0, "pods": 2, "cpuProcessesPerPod": 2, "trainingApi": "TrainJob"},
        "storage": {"mountPath": MOUNT},
        # The export Job uploads the ticket with the Secret's credentials, to a store outside
        # the cluster that the pods reach by name (the test's S3 server).
        "export": {"url": "s3://tickets/e2e", "secretName": "s3-credentials"},
    },
}
S3_IN_PODS = ("minio", 9000)  # dotless: moto reads a dotted host as a bucket name
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")


TRANSFER: dict[str, Any] = {
    **RUN,
    "metadata": {"name": "moved"},
    "spec": {
        **RUN["spec"],
        "dataset": {"format": "prepared", "path": "runs/e2e/data", "imageSize": 28},
        "ticket": {"run": "e2e", "level": 1, "head": "keep", "controls": ["dense"]},
        "pruning": {"rewindTo": "0"},
        "export": {},
        # Master + worker PyTorchJobs (training operator v1): upstream's env and init container.
        "resources": {**RUN["spec"]["resources"], "trainingApi": "PyTorchJob"},
    },
}


def rows(status: dict[str, Any]) -> list[tuple[int, str, float, float]]:
    return sorted((r["level"], r["branch"], round(r["density"], 6), r["top1"]) for r in status["levels"])


@pytest.fixture
def nfs(digits: Path) -> Iterator[Path]:
    """An NFS-like export: world-writable like an nfs-subdir provisioner's folder, never chowned."""
    export = Path(tempfile.mkdtemp(prefix="lth-nfs-"))
    export.chmod(0o777)
    shutil.copytree(digits, export / "digits")
    for folder, _, files in os.walk(export / "digits"):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(Path(folder) / name, 0o644)
    yield export
    shutil.rmtree(export, ignore_errors=True)


def checksums(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def wait_for_export(kube: Cluster, name: str, operator: Operator, timeout: float = 120) -> dict[str, Any]:
    """The run once its export Job ended (the run is Succeeded already)."""
    deadline = time.monotonic() + timeout
    while True:
        run = get_run(kube, name)
        export = run["status"].get("export") or {}
        if export.get("phase") in ("Succeeded", "Failed"):
            assert export["phase"] == "Succeeded", (export, operator.output()[-3000:])
            return run
        assert time.monotonic() < deadline, (run["status"], operator.output()[-3000:])
        time.sleep(0.5)


def owners(root: Path) -> set[tuple[int, int]]:
    return {(path.stat().st_uid, path.stat().st_gid) for path in root.rglob("*")}


def test_a_tiny_run_on_the_stand_ins_equals_lth_run(
    kube: Cluster, operator: Operator, nfs: Path, digits: Path, tmp_path: Path, s3: Any
) -> None:
    api_client = kube.api_client()
    store_port = int(os.environ["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    runtime = ProcessRuntime(external={S3_IN_PODS[0]: (S3_IN_PODS[1], store_port)})
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3-credentials"},
        "stringData": {
            **{name: os.environ[name] for name in CREDENTIALS},
            "AWS_ENDPOINT_URL": f"http://{S3_IN_PODS[0]}:{S3_IN_PODS[1]}",
        },
    }
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(secret))
    kube.add(chart_training_runtime())
    with StandIns(api_client, runtime, exports={"lth-data": nfs}) as cluster:
        kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(RUN))
        run = wait_for_phase(kube, "e2e", {"Succeeded", "Failed"}, timeout=500, operator=operator)
        assert run["status"]["phase"] == "Succeeded", (run["status"], cluster.events(), cluster.kubelet.work)
        run = wait_for_export(kube, "e2e", operator)
        # Its ticket, transferred by a second run (on the same shards, to spare a Spark job).
        kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(TRANSFER))
        moved = wait_for_phase(kube, "moved", {"Succeeded", "Failed"}, timeout=300, operator=operator)
        nodes = sorted(
            (pod for key, pod in cluster.kubelet.seen.items() if key[1].startswith("e2e-level-00-node-0-")),
            key=lambda pod: pod["metadata"]["name"],
        )
        node_status = [cluster.pod(pod["metadata"]["name"])["status"] for pod in nodes]
        master = cluster.pod("moved-level-00-master-0")
        # Still running when the master succeeded, the worker went with cleanPodPolicy Running.
        worker = cluster.kubelet.seen[("default", "moved-level-00-worker-0")]
        logs = {
            pod["metadata"]["name"]: cluster.kubelet.log("default", pod["metadata"]["name"], "node")
            for pod in nodes
        }
    status = run["status"]
    assert status["phase"] == "Succeeded", (status, logs, operator.output()[-3000:])
    assert moved["status"]["phase"] == "Succeeded", moved["status"]
    assert moved["status"]["ticket"]["source"] == "run e2e level 1"

    # Trainer v2's topology: one Job of two pods, torchrun's PET_* and no MASTER_ADDR or RANK;
    # node ranks from each pod's completion index, the master by its hostname in the JobSet's
    # headless Service; both ran to the end.
    assert [pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for pod in nodes] == [
        "0",
        "1",
    ]
    assert [(pod["spec"]["hostname"], pod["spec"]["subdomain"]) for pod in nodes] == [
        ("e2e-level-00-node-0-0", "e2e-level-00"),
        ("e2e-level-00-node-0-1", "e2e-level-00"),
    ]
    node_env = {e["name"]: e.get("value") for e in nodes[1]["spec"]["containers"][0]["env"]}
    assert (node_env["PET_MASTER_ADDR"], node_env["PET_NNODES"], node_env["PET_NPROC_PER_NODE"]) == (
        "e2e-level-00-node-0-0.e2e-level-00",
        "2",
        "2",
    )
    assert not {"MASTER_ADDR", "RANK", "WORLD_SIZE"} & set(node_env)
    assert [s["phase"] for s in node_status] == ["Succeeded", "Succeeded"], logs
    # Training operator v1's topology: node ranks 0 and 1, world size 2 pods x 2 processes, the
    # worker waited for the master's Service in init-pytorch, then both ran as the pod's uid.
    env = {e["name"]: e["value"] for e in worker["spec"]["containers"][0]["env"]}
    assert (env["MASTER_ADDR"], env["RANK"], env["WORLD_SIZE"], env["PET_NNODES"]) == (
        "moved-level-00-master-0",
        "1",
        "4",
        "2",
    )
    assert [c["name"] for c in worker["spec"]["initContainers"]] == ["init-pytorch"]
    assert worker["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert master["status"]["phase"] == "Succeeded"
    # Every file on the volume was written by the one uid and gid the pods run as.
    assert owners(nfs / "runs") == {(10001, 10001)}

    source_mask = nfs / "runs" / "e2e" / "levels" / "01" / "mask.safetensors"
    moved_mask = nfs / "runs" / "moved" / "levels" / "00" / "mask.safetensors"
    assert moved_mask.read_bytes() == source_mask.read_bytes()  # the same classes: the head is kept
    assert (nfs / "runs" / "e2e" / "data" / "manifest.json").exists()
    assert all(r["top1"] > 40 and r["durationSeconds"] > 0 for r in status["levels"])  # chance: 33 %

    local = tmp_path / "local"
    local.mkdir()
    (local / "digits").symlink_to(digits)
    spec_file = local / "run.yaml"
    # The export Job's upload, fetched back before `lth run` uploads its own (the same spec).
    fetched = fetch_ticket("s3://tickets/e2e", tmp_path / "fetched")
    spec_file.write_text(yaml.safe_dump(copy.deepcopy(RUN)))
    subprocess.run(
        [sys.executable, "-m", "lth", "run", str(spec_file), "--root", str(local), "--nproc", "4"],
        check=True,
        capture_output=True,
    )
    local_status = yaml.safe_load((local / "runs" / "e2e" / "status.json").read_text())
    assert rows(local_status) == rows(status)

    # The export Job wrote what `lth run` writes at its end (`lth report`), byte for byte.
    assert status["export"]["path"] == "runs/e2e/ticket"
    exported = nfs / status["export"]["path"]
    assert {"ticket.json", "mask.safetensors", "rewind.safetensors", "README.md", "accuracy.png"} <= {
        path.name for path in exported.iterdir()
    }
    assert checksums(exported) == checksums(local / "runs" / "e2e" / "ticket")
    # ... and uploaded it: fetched back from the store, every checksum verified.
    assert status["export"]["url"] == "s3://tickets/e2e"
    assert checksums(fetched) == checksums(exported)
