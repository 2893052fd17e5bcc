"""Evaluation over the whole val split on every rank, and the precision the level trains in."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lth.api import RunSpec
from lth_trainer.data.device import Inputs
from lth_trainer.data.loader import ShardDataset, eval_batches, loader
from lth_trainer.dist import Platform

log = logging.getLogger("lth_trainer")


@dataclass(frozen=True)
class Precision:
    autocast: torch.autocast | None
    scaler: torch.amp.GradScaler

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return self.autocast if self.autocast is not None else contextlib.nullcontext()


def precision_for(spec: RunSpec, device: torch.device) -> Precision:
    """bf16/fp16 autocast on GPU (fp16 with a gradient scaler). CPUs train fp32: bf16
    autocast measured 5x slower than fp32 on a CPU without native bf16 (no AVX512-BF16/AMX)."""
    wanted = spec.training.precision
    if device.type == "cuda" and wanted != "fp32":
        dtype = torch.bfloat16 if wanted == "bf16" else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=wanted == "fp16")
        return Precision(torch.autocast("cuda", dtype=dtype), scaler)
    if wanted != "fp32":
        log.info("spec.training.precision %s applies on GPU; training fp32 on %s", wanted, device.type)
    return Precision(None, torch.amp.GradScaler(device.type, enabled=False))


def evaluate(
    model: nn.Module,
    dataset: ShardDataset,
    inputs: Inputs,
    precision: Precision,
    platform: Platform,
    batch_size: int,
    workers: int,
    num_classes: int,
) -> dict[str, float | None]:
    """Top-1, top-5 (None under 5 classes) and mean loss over the whole val split, all ranks."""
    model.eval()
    batches = eval_batches(len(dataset), batch_size, platform.rank, platform.world_size)
    totals = torch.zeros(4, dtype=torch.float64, device=platform.device)
    with torch.inference_mode():
        for images, labels, boxes in loader(dataset, batches, workers, platform.device.type == "cuda"):
            labels = labels.to(platform.device, non_blocking=True)
            with precision.context():
                logits = model(inputs(images, boxes))
            logits = logits.float()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = top == labels[:, None]
            totals += torch.stack(
                [
                    torch.tensor(float(len(labels)), device=platform.device, dtype=torch.float64),
                    hits[:, 0].sum().double(),
                    hits.any(dim=1).sum().double(),
                    F.cross_entropy(logits, labels, reduction="sum").double(),
                ]
            )
    model.train()
    count, top1, top5, loss = platform.sum(totals.tolist())
    return {
        "top1": 100.0 * top1 / count,
        "top5": 100.0 * top5 / count if num_classes >= 5 else None,
        "loss": loss / count,
    }
