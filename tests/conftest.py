"""Shared test fixtures."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

# Property-based tests (the fuzzing of issue 23): the same examples on every run, no example
# database and no cache in the checkout, and no deadline on a shared 2-core machine.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "lth-hypothesis")
settings.register_profile(
    "lth", derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("lth")

# `kube`: an emulated Kubernetes API server (tests/kube/); `s3`: an S3 server (tests/s3.py);
# `mlflow_server`: a real MLflow tracking server (tests/mlflow_server.py).
pytest_plugins = ("tests.kube.plugin", "tests.operator.plugin", "tests.s3", "tests.mlflow_server")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
