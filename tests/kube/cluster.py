"""Run the emulator in a background thread and hand out what clients need: a kubeconfig, kubectl, a client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import kmock
import yaml

from tests.kube.emulator import ApiServer
from tests.kube.resources import Kind, kinds_from_crd, kinds_from_file, project_kinds

KUBECTL = os.environ.get("KUBECTL", "kubectl")
NAMESPACES = ("default", "kube-system")


def write_kubeconfig(path: Path, server_url: str, namespace: str = "default") -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": server_url}}],
        "users": [{"name": "emulator", "user": {"token": "emulator"}}],
        "contexts": [
            {
                "name": "emulator",
                "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace},
            }
        ],
        "current-context": "emulator",
    }
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(yaml.safe_dump(config))
    temporary.replace(path)
    return path


class Cluster:
    """A running emulator, as a test sees it."""

    def __init__(self, api: ApiServer, url: str, kubeconfig: Path, loop: asyncio.AbstractEventLoop) -> None:
        self.api = api  # the kmock handler: `cluster.api.objects`, or `cluster.api['post pods'] << 500`
        self.url = url
        self.kubeconfig = kubeconfig
        self._loop = loop

    def register(self, crd: Path | dict[str, Any] | Kind) -> None:
        """Serve more kinds: a CRD YAML file, a parsed CRD, or a Kind."""
        if isinstance(crd, Kind):
            kinds = [crd]
        elif isinstance(crd, dict):
            kinds = kinds_from_crd(crd)
        else:
            kinds = kinds_from_file(crd)
        self._call(self.api.register, *kinds)

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object as a POST would, without a client (its status is dropped, as on a POST)."""
        created: dict[str, Any] = self._call(self.api.add, obj)
        return created

    def _call(self, fn: Any, *args: Any) -> Any:
        """Run `fn` on the server's loop, where the store lives."""

        async def call() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=10)

    @property
    def env(self) -> dict[str, str]:
        """The environment for a subprocess (kubectl, `kopf run`) that should talk to this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this cluster; with `check`, fail with kubectl's stderr."""
        result = subprocess.run(
            [KUBECTL, *args], input=input, capture_output=True, text=True, env=self.env, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def kubectl_background(self, *args: str) -> subprocess.Popen[str]:
        """Start kubectl and return at once (for `get -w`, `wait`, `delete --wait`)."""
        return subprocess.Popen(
            [KUBECTL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env
        )

    def api_client(self) -> Any:
        """A `kubernetes.client.ApiClient` for this cluster (the KUBECONFIG variable is not consulted)."""
        import kubernetes

        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def running(kubeconfig: Path, kinds: list[Kind] | None = None, port: int | None = None) -> Iterator[Cluster]:
    """Start an emulator on 127.0.0.1 (a free port unless given) serving `kinds` (default: the project's)."""
    loop = asyncio.new_event_loop()
    started: Future[Cluster] = Future()
    stop = asyncio.Event()

    async def serve() -> None:
        try:
            async with ApiServer() as api, kmock.Server(api, host="127.0.0.1", port=port) as server:
                api.register(*(project_kinds() if kinds is None else kinds))
                for namespace in NAMESPACES:
                    api.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
                url = f"http://127.0.0.1:{server.port}"
                started.set_result(Cluster(api, url, write_kubeconfig(kubeconfig, url), loop))
                await stop.wait()
                api.end_watches()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    thread = threading.Thread(
        target=loop.run_until_complete, args=(serve(),), name="kube-emulator", daemon=True
    )
    thread.start()
    try:
        yield started.result(timeout=30)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()
