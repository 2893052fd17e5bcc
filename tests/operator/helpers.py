"""Helpers for the operator tests: scripted children, run manifests, waiting on a run."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from lth.api import LevelResult, StabilityResult, workload
from lth.api.workload import BAD_INPUT, EXIT_BAD_INPUT
from lth.cluster.children import objects
from tests.kube.cluster import Cluster
from tests.operator.plugin import Operator
from tests.standins import Cluster as StandIns
from tests.standins import Finished, ScriptedRuntime

RUNS = ("lth.dev", "v1alpha1", "lotteryticketruns")
CHART = Path(__file__).resolve().parents[2] / "charts" / "lth-operator"


def chart_training_runtime(workloads: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ClusterTrainingRuntime the chart installs for TrainJobs, rendered by Helm's engine."""
    import helm_python
    import yaml

    values = {"trainingRuntime": {"create": True}, "workloads": workloads or {}}
    rendered = helm_python.Chart.load(str(CHART)).render(values, name="lth", namespace="lth-system")
    docs = [
        doc
        for path, text in rendered.items()
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    (runtime,) = [doc for doc in docs if doc["kind"] == "ClusterTrainingRuntime"]
    return runtime  # type: ignore[no-any-return]


@dataclass
class Script:
    """Scripted children: each runs `ticks` polls, then succeeds or fails as told."""

    top1: Callable[[str, int, str], float] = lambda run, level, branch: 76.0 if branch == "main" else 60.0
    fail: dict[str, int] = field(default_factory=dict)
    """child name -> attempts that fail"""
    bad_input: dict[str, str] = field(default_factory=dict)
    """child name -> the trainer's message when it fails on bad input (under torchrun: exit 1)"""
    ticks: int = 2
    seen: dict[str, int] = field(default_factory=dict)
    uids: dict[str, set[str]] = field(default_factory=dict)
    hold: set[str] = field(default_factory=set)
    """child names that keep running (printing an epoch line per poll) until removed from here"""
    epochs: int = 90
    node_fail: dict[str, tuple[int, str]] = field(default_factory=dict)
    """TrainJob name -> (attempts whose node 1 fails, its termination message)"""
    instability: Callable[[int], float] = lambda point: 0.5
    """rewindTo auto: ladder point -> the instability its path job reports."""

    def log(self, kind: str, obj: dict[str, Any]) -> str | None:
        """A level's master has printed one `lth-progress` line per poll so far (as many epochs)."""
        if (
            kind not in ("PyTorchJob", "TrainJob")
            or objects.LABEL_STABILITY_POINT in obj["metadata"]["labels"]
        ):
            return None
        meta = obj["metadata"]
        done = min(self.seen.get(f"{meta['name']}/{meta['uid']}", 0), self.epochs)
        level, branch = int(meta["labels"][objects.LABEL_LEVEL]), meta["labels"][objects.LABEL_BRANCH]
        lines = [
            workload.epoch_line(
                {
                    "level": level,
                    "branch": branch,
                    "epoch": epoch,
                    "epochs": self.epochs,
                    "top1": 40.0 + epoch / 10,
                    "imagesPerSecond": 2900.0,
                    "time": time.time(),
                    "etaSeconds": 60.0 * (self.epochs - epoch),
                }
            )
            for epoch in range(1, done + 1)
        ]
        return "".join(f"{line}\n" for line in lines)

    def __call__(self, kind: str, obj: dict[str, Any]) -> Finished | None:
        meta = obj["metadata"]
        name = meta["name"]
        self.uids.setdefault(name, set()).add(meta["uid"])
        key = f"{name}/{meta['uid']}"
        self.seen[key] = self.seen.get(key, 0) + 1
        if self.seen[key] < self.ticks or name in self.hold:
            return None
        attempt = int(meta.get("annotations", {}).get(objects.ANNOTATION_ATTEMPT, "1"))
        if name in self.bad_input:
            # torchrun exits 1 whatever its workers' codes; the Spark job exits 2 itself.
            code = EXIT_BAD_INPUT if kind == "SparkApplication" else 1
            return Finished(False, "Error", BAD_INPUT + self.bad_input[name], code)
        if attempt <= self.fail.get(name, 0):
            return Finished(False, "OOMKilled")
        if kind in ("SparkApplication", "Job"):
            return Finished(True)
        if objects.LABEL_STABILITY_POINT in meta["labels"]:
            return Finished(True, termination_message=json.dumps(self.stability(meta["labels"]).to_wire()))
        level = int(meta["labels"][objects.LABEL_LEVEL])
        branch = meta["labels"][objects.LABEL_BRANCH]
        run = meta["labels"][objects.LABEL_RUN]
        result = LevelResult(
            level=level,
            branch=branch,
            density=round(0.8**level, 6),
            top1=self.top1(run, level, branch),
            top5=90.0,
            loss=0.9,
            duration_seconds=42.0,
        )
        return Finished(True, termination_message=json.dumps(result.to_wire()))

    def stability(self, labels: dict[str, str]) -> StabilityResult:
        """A job of the instability analysis: a copy that trained 4 epochs, or its path."""
        point, part = int(labels[objects.LABEL_STABILITY_POINT]), labels[objects.LABEL_STABILITY_PART]
        if part != "path":
            return StabilityResult(point=point, part=part, epochs=0, step=0, top1=95.0, trained_epochs=4.0)
        barrier = self.instability(point)
        errors = [5.0, 5.0 + barrier, 5.0]
        return StabilityResult(point=point, part="path", epochs=0, step=0, errors=errors, instability=barrier)

    def node(self, trainjob: dict[str, Any], index: int) -> Finished | None:
        """A TrainJob's node `index` > 0: fails at once where `node_fail` says, else ends as node 0."""
        meta = trainjob["metadata"]
        attempt = int(meta.get("annotations", {}).get(objects.ANNOTATION_ATTEMPT, "1"))
        attempts, message = self.node_fail.get(meta["name"], (0, ""))
        return Finished(False, "Error", message) if index == 1 and attempt <= attempts else None


@contextmanager
def controllers(kube: Cluster, script: Script, **options: Any) -> Iterator[StandIns]:
    """The training operator, Spark operator and kubelet stand-ins, containers ending as scripted
    (`options`: the stand-ins' images, GPUs, Spark webhook...)."""
    api_client = kube.api_client()
    volume = {"lth-data": Path(tempfile.mkdtemp(prefix="lth-volume-"))}
    runtime = ScriptedRuntime(api_client, script, log=script.log, node=script.node)
    with StandIns(api_client, runtime, exports=volume, **options) as running:
        yield running


def run_manifest(name: str, levels: int = 2, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dataset": {"format": "imagefolder", "path": "digits", "imageSize": 28},
        "model": {"arch": "smallcnn"},
        "training": {"epochs": 4, "batchSize": 8, "milestones": [], "warmupEpochs": 0, "precision": "fp32"},
        "pruning": {"levels": levels, "rewindTo": "0"},
        "resources": {"gpusPerPod": 0},
    }
    for section, values in spec.items():
        body.setdefault(section, {}).update(values)
    return {
        "apiVersion": "lth.dev/v1alpha1",
        "kind": "LotteryTicketRun",
        "metadata": {"name": name},
        "spec": body,
    }


def get_run(kube: Cluster, name: str, namespace: str = "default") -> dict[str, Any]:
    custom = client.CustomObjectsApi(kube.api_client())
    return custom.get_namespaced_custom_object(RUNS[0], RUNS[1], namespace, RUNS[2], name)  # type: ignore[no-any-return]


def wait_for_phase(
    kube: Cluster, name: str, phases: set[str], timeout: float = 60, operator: Operator | None = None
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = get_run(kube, name)
        if run.get("status", {}).get("phase") in phases:
            return run
        if time.monotonic() > deadline:
            log = operator.output()[-4000:] if operator else ""
            raise AssertionError(f"{name} did not reach {phases}: {run.get('status')}\n{log}")
        time.sleep(0.1)
