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
