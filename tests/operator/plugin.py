"""The `operator` fixture: the operator in its own process, as the chart's Deployment runs it."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube.cluster import Cluster


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
        self.env: dict[str, str] = {}
        """More environment for the next start (LTH_RESYNC_SECONDS, say)."""

    def start(self) -> None:
        env = {
            **self.kube.env,
            "LTH_METRICS_PORT": str(self.metrics_port),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        command = [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "--standalone",
            "-m",
            "lth.cluster.handlers",
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

    def resync_every(self, seconds: float) -> None:
        """Restart with a shorter resync: what only the timer sees (a pod stuck pulling its
        image or unschedulable, a level's progress) shows within `seconds`, not 30."""
        self.kill()
        self.env["LTH_RESYNC_SECONDS"] = str(seconds)
        self.start()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def operator(kube: Cluster, tmp_path: Path) -> Iterator[Operator]:
    running = Operator(kube, tmp_path / "operator.log")
    running.start()
    yield running
    running.kill()
