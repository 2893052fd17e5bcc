"""The `kube` fixture: a fresh emulated cluster per test, serving the project's kinds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube.cluster import Cluster, running


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[Cluster]:
    with running(tmp_path / "kubeconfig") as cluster:
        yield cluster


@pytest.fixture
def kube_as_default(kube: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """The emulator as the default cluster of this process: for code that loads the kubeconfig itself.

    kopf's default login (`kubernetes.config.load_kube_config()`) reads a location that the
    kubernetes client fixed from KUBECONFIG at import time, so both are set here.
    """
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(kube.kubeconfig))
    return kube
