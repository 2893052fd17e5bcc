"""Optimizer and learning-rate schedule from spec.training.

The schedule is a pure function of the global step, so a checkpoint needs only
the step to restore it, and a rewound level restarts it at step k exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lth.api import TrainingSpec


def lr_factor(training: TrainingSpec, step: int, steps_per_epoch: int) -> float:
    """Multiplier of spec.training.lr at a global step (linear warmup, then the schedule)."""
    epoch = step / steps_per_epoch
    warmup = training.warmup_epochs
    if epoch < warmup:
        return (step + 1) / (warmup * steps_per_epoch)
    if training.schedule == "step":
        return float(training.gamma ** sum(1 for m in training.milestones if epoch >= m))
    if training.schedule == "cosine":
        span = max(training.epochs - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min((epoch - warmup) / span, 1.0)))
    return 1.0


def build_optimizer(training: TrainingSpec, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or Adam over every parameter; fused (one kernel for all parameters, and no host sync
    for fp16's gradient scaler) when the parameters are on a GPU."""
    params = list(model.parameters())
    fused = bool(params) and params[0].device.type == "cuda"
    if training.optimizer == "adam":
        return torch.optim.Adam(params, lr=training.lr, weight_decay=training.weight_decay, fused=fused)
    return torch.optim.SGD(
        params,
        lr=training.lr,
        momentum=training.momentum,
        nesterov=training.nesterov and training.momentum > 0,
        weight_decay=training.weight_decay,
        fused=fused,
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
