"""The operator as users run it (`kopf run -m lth.kopf_handlers`), against the emulator."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from lth import manifests
from lth.api import LevelResult
from tests.kube.cluster import Cluster
from tests.operator.simulators import ChildControllers, Finished

RUNS = ("lth.dev", "v1alpha1", "lotteryticketruns")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Operator:
    """The operator in its own process, as the Deployment runs it; it can be killed and started again."""

    def __init__(self, kube: Cluster, log: Path) -> None:
        self.kube = kube
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.metrics_port = free_port()

    def start(self) -> None:
        env = {**self.kube.env, "LTH_METRICS_PORT": str(self.metrics_port), "PYTHONUNBUFFERED": "1"}
        command = [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "--standalone",
            "-m",
            "lth.kopf_handlers",
            "--all-namespaces",
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def operator(kube: Cluster, tmp_path: Path) -> Iterator[Operator]:
    running = Operator(kube, tmp_path / "operator.log")
    running.start()
    yield running
    running.kill()


@dataclass
class Script:
    """Scripted children: each runs `ticks` polls, then succeeds or fails as told."""

    top1: Callable[[str, int, str], float] = lambda run, level, branch: 76.0 if branch == "main" else 60.0
    fail: dict[str, int] = field(default_factory=dict)
    """child name -> attempts that fail"""
    ticks: int = 2
    seen: dict[str, int] = field(default_factory=dict)
    uids: dict[str, set[str]] = field(default_factory=dict)

    def __call__(self, kind: str, obj: dict[str, Any]) -> Finished | None:
        meta = obj["metadata"]
        name = meta["name"]
        self.uids.setdefault(name, set()).add(meta["uid"])
        key = f"{name}/{meta['uid']}"
        self.seen[key] = self.seen.get(key, 0) + 1
        if self.seen[key] < self.ticks:
            return None
        attempt = int(meta.get("annotations", {}).get(manifests.ANNOTATION_ATTEMPT, "1"))
        if attempt <= self.fail.get(name, 0):
            return Finished(False, "OOMKilled: the container used more memory than its limit")
        if kind == "SparkApplication":
            return Finished(True)
        level = int(meta["labels"][manifests.LABEL_LEVEL])
        branch = meta["labels"][manifests.LABEL_BRANCH]
        run = meta["labels"][manifests.LABEL_RUN]
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


@contextmanager
def controllers(kube: Cluster, script: Script) -> Iterator[ChildControllers]:
    with ChildControllers(kube.api_client(), script) as running:
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
