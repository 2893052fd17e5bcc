"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

# `kube`: an emulated Kubernetes API server (tests/kube/); `s3`: an S3 server (tests/s3.py);
# `mlflow_server`: a real MLflow tracking server (tests/mlflow_server.py).
pytest_plugins = ("tests.kube.plugin", "tests.operator.plugin", "tests.s3", "tests.mlflow_server")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
