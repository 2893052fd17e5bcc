"""Settings shared by the tests that really train: a small CNN that learns in seconds on a CPU."""

from __future__ import annotations

from typing import Any

TINY_TRAINING: dict[str, Any] = {
    "epochs": 2,
    "optimizer": "adam",
    "lr": 0.0012,
    "weightDecay": 0,
    "schedule": "constant",
    "milestones": [],
    "warmupEpochs": 0,
    "augmentation": "none",
    "precision": "fp32",
    "workers": 0,
}
"""spec.training for smallcnn on tiny images: 2 epochs of Adam, fp32, no augmentation."""
