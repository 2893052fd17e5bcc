"""The `mlflow_server` fixture: a real `mlflow server` on 127.0.0.1 (sqlite backend, a local
artifact store it serves), started once per session, as a team's tracking server would be."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

START_SECONDS = 120
"""Its first start creates the database's tables: 10-20 s on a busy 2-core machine."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`mlflow server` in `workdir`, and its URL once /health answers."""
    port = free_port()
    log = (workdir / "server.log").open("wb")
    command = [
        str(Path(sys.executable).with_name("mlflow")), "server",
        "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination", str(workdir / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    # No GenAI job runner (seven worker processes): the tests track runs only.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return server, url
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    server.kill()
    raise RuntimeError(f"mlflow server did not start: {(workdir / 'server.log').read_text()[-2000:]}")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server, url = start_server(tmp_path_factory.mktemp("mlflow"))
    yield url
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
