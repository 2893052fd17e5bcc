"""The demo's archives (real MNIST digits in ImageNet's layout), built once per session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    subprocess.run([sys.executable, "-m", "lth_spark.demo", str(out)], check=True, capture_output=True)
    return out
