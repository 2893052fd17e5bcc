"""Pruning while a level trains (the gradual search's level, Zhu and Gupta 2017): a step hook
that prunes the network's current weights by global magnitude at each prune step of the
level's plan (`lth.api.search.base.PruneSchedule`), and keeps the mask it had at each
ticket's density for the ticket levels to train in full from the rewind point.

The prune steps are spread evenly over the schedule's share of the level's steps (the first
three quarters, for the gradual search), the first at its start; the rest trains the
sparsest mask. The current mask is part of the level's checkpoint, so a resumed level prunes
exactly as an uninterrupted one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lth.api import RunSpec
from lth.api.naming import LevelLayout
from lth.api.search.base import PruneSchedule
from lth_trainer import pruning
from lth_trainer.pruning import Mask
from lth_trainer.store import save_tensors


@dataclass(frozen=True)
class PruneStep:
    step: int
    """Applied before this global step trains (so at the search's first step: before any)."""
    density: float
    snapshot: Path | None
    """Where the mask is kept once this step is done: the ticket level's mask-for-NN file."""


def schedule(prunes: PruneSchedule, files: LevelLayout, first_step: int, total_steps: int) -> list[PruneStep]:
    """The prune steps of a level that trains global steps first_step..total_steps."""
    tickets = dict(prunes.tickets)
    span = (total_steps - first_step) * prunes.share
    gaps = max(len(prunes.densities) - 1, 1)
    return [
        PruneStep(
            first_step + int(i * span / gaps),
            density,
            files.mask_for(tickets[density]) if density in tickets else None,
        )
        for i, density in enumerate(prunes.densities)
    ]


@dataclass
class PruneSteps:
    """Step hook of a level that prunes as it trains: prunes at each prune step, keeps the tickets' masks."""

    spec: RunSpec
    steps: list[PruneStep]
    mask: Mask
    write: bool

    def due(self, step: int) -> list[PruneStep]:
        """Prune steps at or before `step` that the current mask has not reached yet."""
        current = pruning.kept(self.mask)
        size = pruning.size(self.mask)
        return [p for p in self.steps if p.step <= step and target_kept(p.density, size) < current]

    def before_step(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
        """Prune what is due before `step` trains; True if the mask changed (the caller then
        rebuilds its gradient masks)."""
        due = self.due(step)
        for prune_step in due:
            self.prune(prune_step, model, optimizer)
        return bool(due)

    def prune(self, prune_step: PruneStep, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        params = dict(model.named_parameters())
        kept = pruning.kept(self.mask)
        remove = kept - target_kept(prune_step.density, pruning.size(self.mask))
        strategy = pruning.STRATEGIES[self.spec.pruning.strategy]
        weights = {name: params[name].detach() for name in self.mask}
        self.mask = strategy(weights, self.mask, remove / kept)
        zero_pruned(params, self.mask, optimizer)
        snapshot = prune_step.snapshot
        if self.write and snapshot is not None and not snapshot.is_file():
            save_tensors(snapshot, self.mask)


def target_kept(density: float, size: int) -> int:
    return round(density * size)


def zero_pruned(params: dict[str, nn.Parameter], mask: Mask, optimizer: torch.optim.Optimizer) -> None:
    """Pruned weights and their optimizer state (momentum, Adam moments) to exactly 0, so that,
    with their gradients masked from now on, they stay 0."""
    with torch.no_grad():
        for name, keep in mask.items():
            param = params[name]
            factor = keep.to(device=param.device, dtype=param.dtype)
            param.mul_(factor)
            for value in optimizer.state.get(param, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    value.mul_(factor.to(value.dtype))
