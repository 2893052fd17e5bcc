"""What a level's checkpoint holds (weights, optimizer, data position, random state, history)
and how a level resumes from it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lth_trainer import pruning
from lth_trainer.dist import Platform
from lth_trainer.store import (
    TrainerError,
    load_checkpoint,
)
from lth_trainer.training.evaluation import Precision

CHECKPOINT_FORMAT = 1


@dataclass
class Counters:
    """What a checkpoint carries besides weights and optimizer: the data position (the
    global step) and the figures that the result sums over restarts."""

    step: int
    train_seconds: float = 0.0
    train_images: int = 0
    elapsed_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_loss: float = 0.0
    epoch_rate: float = 0.0
    mask: pruning.Mask | None = None
    """The gradual search's current mask (it changes as the level trains); None elsewhere."""


def rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def checkpoint_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    counters: Counters,
    platform: Platform,
    job: dict[str, Any],
) -> dict[str, Any]:
    """`job`: what the job is (its level and branch, or its stability point and part), checked on resume."""
    return {
        "format": CHECKPOINT_FORMAT,
        **job,
        "step": counters.step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": precision.scaler.state_dict(),
        "rng": rng_state(platform.device),
        "trainSeconds": counters.train_seconds,
        "trainImages": counters.train_images,
        "elapsedSeconds": counters.elapsed_seconds,
        "history": counters.history,
        "mask": counters.mask,
    }


def resume(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    platform: Platform,
    job: dict[str, Any],
) -> Counters:
    state = load_checkpoint(path)
    if state.get("format") != CHECKPOINT_FORMAT or any(state.get(k) != v for k, v in job.items()):
        found = {k: state.get(k) for k in job}
        raise TrainerError(f"{path}: checkpoint of {found}, not of {job}")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            precision.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"], platform.device)
        return Counters(
            step=int(state["step"]),
            train_seconds=float(state["trainSeconds"]),
            train_images=int(state["trainImages"]),
            elapsed_seconds=float(state["elapsedSeconds"]),
            history=list(state["history"]),
            mask=state.get("mask"),
        )
    except (KeyError, RuntimeError, ValueError, TypeError) as error:
        raise TrainerError(f"{path}: checkpoint does not fit this level: {error}") from error
