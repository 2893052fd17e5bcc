"""The gradual search (spec.pruning.search.method gradual): one short run that prunes as it
trains (Zhu and Gupta 2017, on level 0's trained weights), and keeps the mask it had at each
ticket's density for the ticket levels to train in full from the rewind point.

The prune steps go through IMP's densities (spec.pruning.fraction) down to the sparsest
ticket, each pruning the network's current weights by global magnitude; they are spread
evenly over the first three quarters of the search's steps, the first at its start, and the
last quarter trains the sparsest mask. The current mask is part of the level's checkpoint,
so a resumed search prunes exactly as an uninterrupted one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lth.api import SEARCH_LEVEL, RunSpec
from lth_trainer import pruning
from lth_trainer.level import level_files
from lth_trainer.pruning import Mask
from lth_trainer.store import save_tensors

PRUNING_SHARE = 0.75
"""Share of the search's steps over which the prune steps are spread."""


@dataclass(frozen=True)
class PruneStep:
    step: int
    """Applied before this global step trains (so at the search's first step: before any)."""
    density: float
    snapshot: Path | None
    """Where the mask is kept once this step is done: the ticket level's mask-for-NN file."""


def schedule(run_dir: Path, spec: RunSpec, first_step: int, total_steps: int) -> list[PruneStep]:
    """The prune steps of a search that trains global steps first_step..total_steps."""
    densities = spec.pruning.search_densities()
    tickets = {d: SEARCH_LEVEL + 1 + i for i, d in enumerate(spec.pruning.ticket_densities())}
    span = (total_steps - first_step) * PRUNING_SHARE
    gaps = max(len(densities) - 1, 1)
    files = level_files(run_dir, SEARCH_LEVEL)
    return [
        PruneStep(
            first_step + int(i * span / gaps),
            density,
            files.mask_for(tickets[density]) if density in tickets else None,
        )
        for i, density in enumerate(densities)
    ]


@dataclass
class GradualPruning:
    """Step hook of the search level: prunes at each prune step, keeps the tickets' masks."""

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
