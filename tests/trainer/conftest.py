"""Tiny shards and specs for the trainer tests (smallcnn on 16x16 images, seconds per level)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from lth.api import RunSpec
from lth.api.workload import spec_json
from tests.tiny import TINY_TRAINING
from tests.trainer.shards import pattern_images, write_shards

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="session")
def one_thread() -> Iterator[None]:
    """Two threads on a shared 2-core machine are 10x slower than one for a tiny CNN."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 classes of 16x16 images: 240 train in 3 shards, 80 val in 1."""
    path = tmp_path_factory.mktemp("data")
    write_shards(path, {"train": pattern_images(4, 240, 16, 0), "val": pattern_images(4, 80, 16, 1)}, 4, 100)
    return path


def make_spec(**training: Any) -> RunSpec:
    pruning = training.pop("pruning", {})
    dataset = training.pop("dataset", {})
    return RunSpec.model_validate(
        {
            "dataset": {"format": "prepared", "path": "data", "imageSize": 16, **dataset},
            "model": {"arch": "smallcnn"},
            "training": {**TINY_TRAINING, "epochs": 3, "batchSize": 20, "lr": 0.002, **training},
            "pruning": {"fraction": 0.2, "rewindTo": "1ep", **pruning},
        }
    )


def trainer_args(run_dir: Path, data: Path, spec: RunSpec, level: int, branch: str = "main") -> list[str]:
    return [
        "--run-dir", str(run_dir), "--data", str(data), "--level", str(level), "--branch", branch,
        "--termination-log", str(run_dir / f"termination-{level}-{branch}"), "--spec-json", spec_json(spec),
    ]  # fmt: skip


def subprocess_env() -> dict[str, str]:
    """The packages from this checkout, one thread per process (as torchrun sets it)."""
    path = os.pathsep.join(str(ROOT / p) for p in ("operator", "trainer"))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


PYTHON = sys.executable
