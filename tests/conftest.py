"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

# The `kube` fixture: an emulated Kubernetes API server (tests/kube/).
pytest_plugins = ("tests.kube.plugin", "tests.operator.plugin")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
