"""One IMP level (or one control branch of a level): where it starts, and its files.

Level 0 trains the dense network from theta_0 and saves theta_k, the rewind
point. Level L >= 1 trains with the mask pruned from level L-1's final weights,
from step k of the schedule: with theta_k (weight rewinding) or with L-1's final
weights (learning-rate rewinding, as Renda et al. 2020 define it: the same
schedule from step k, applied to the final weights; rewindTo 0 replays it
whole). The control branches of level L train the same mask from a fresh init
(random-reinit), or a random mask of the same per-layer count from the ticket's
start weights and step (random-prune).

A transfer run (spec.ticket) starts instead from a ticket found by another run:
level 0 trains that ticket on this run's data (see lth_trainer.transfer), beside
controls from a fresh init (dense; random-prune; random-reinit), and its later
levels prune on from there.

Which mask, weights and steps a main level has is the search method's to say
(`lth.api.search`, a `LevelPlan` per level); this module carries the plan out for any
method, and the branch table (`lth.api.branches`) says how a control changes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lth.api import Branch, RunSpec
from lth.api.branches import BRANCHES
from lth.api.naming import LevelLayout, RunLayout
from lth.api.pruning import step_of
from lth.api.search.base import (
    Dense,
    LevelPlan,
    MaskOf,
    PrunedFrom,
    PruneSchedule,
    SnapshotOf,
    Transferred,
)
from lth.storage.tickets import TicketFiles
from lth_trainer import pruning
from lth_trainer.pruning import Mask
from lth_trainer.store import TrainerError, copy_file, load_tensors, save_tensors
from lth_trainer.transfer import transfer

LevelFiles = LevelLayout
"""The files of levels/NN[-branch]/ (lth.api.naming.LevelLayout)."""


def level_files(run_dir: Path, level: int, branch: Branch = "main") -> LevelFiles:
    return RunLayout(root=run_dir).level(level, branch)


def derived_seed(seed: int, level: int, branch: Branch) -> int:
    """A seed of its own for each (level, branch): a reinit differs from theta_0."""
    return int(np.random.SeedSequence([seed, level, BRANCHES[branch].seed_offset]).generate_state(1)[0])


def rewind_step(spec: RunSpec, steps_per_epoch: int) -> int:
    """The step of the rewind point (with rewindTo auto: of the point the analysis chose, which
    the trainer's --rewind-to put into the spec it was given)."""
    amount, unit = spec.pruning.rewind_point()
    step = step_of(amount, steps_per_epoch) if unit == "ep" else int(amount)
    total = spec.training.epochs * steps_per_epoch
    if step >= total:
        raise TrainerError(
            f"spec.pruning.rewindTo: {spec.pruning.rewind_to} is step {step}, "
            f"but a level has only {total} steps ({steps_per_epoch} per epoch)"
        )
    return step


@dataclass(frozen=True)
class LevelStart:
    """What a level trains: its mask, its first weights, its first step, and where they came from."""

    mask: Mask
    weights: dict[str, torch.Tensor]
    step: int
    origin: dict[str, object]
    end_step: int | None = None
    """The step it trains to (a search level); None: the end of the schedule."""
    prunes: PruneSchedule | None = None
    """Prune steps while it trains (the gradual search's level), from the method's plan."""


def main_mask(run_dir: Path, spec: RunSpec, level: int, model: nn.Module, write: bool) -> Mask:
    """Mask of main level L, where its plan says it comes from: dense (level 0, or a level that
    prunes as it trains), or read from levels/LL/mask, or pruned from an earlier level, taken
    from one, or from a search's snapshot, and written (atomically; every job of level L
    computes the same bytes, so a race is harmless). A transfer run's level 0 writes its
    ticket's mask when it starts."""
    ignore = spec.pruning.ignore_layers
    files = level_files(run_dir, level)
    source = spec.pruning.method.level_plan(spec, level).mask
    if isinstance(source, Dense):
        mask = pruning.full_mask(model, ignore)
    elif files.mask.is_file():
        mask = load_tensors(files.mask, "mask")
        pruning.check_mask(mask, model, ignore, str(files.mask))
        return mask
    else:
        match source:
            case Transferred():
                raise TrainerError(
                    f"{files.mask}: missing: level 0 of this transfer run has not started "
                    "(it writes the transferred ticket's mask)"
                )
            case SnapshotOf():
                mask = searched_mask(run_dir, spec, source, level, model)
            case MaskOf():
                mask = main_mask(run_dir, spec, source.level, model, write=False)
            case PrunedFrom():
                mask = pruned_after(run_dir, spec, source.level, level, model, source.density)
    if write and not files.mask.is_file():
        save_tensors(files.mask, mask)
    return mask


def pruned_after(
    run_dir: Path, spec: RunSpec, previous: int, level: int, model: nn.Module, density: float | None
) -> Mask:
    """The mask pruned from level `previous`'s final weights and mask, for level `level`: by
    spec.pruning.fraction, or (a short-imp search) down to `density` exactly."""
    before = level_files(run_dir, previous)
    files = level_files(run_dir, level)
    if not before.dir.is_dir():
        raise TrainerError(
            f"{before.dir}: level {previous} does not exist, so level {level} cannot start (level gap)"
        )
    if not before.final.is_file():
        raise TrainerError(
            f"{files.mask}: missing, and {before.final} (the weights to prune it from) does not exist: "
            f"level {previous} has not finished"
        )
    mask = main_mask(run_dir, spec, previous, model, write=False)
    fraction = spec.pruning.fraction
    if density is not None:
        kept = pruning.kept(mask)
        fraction = (kept - round(density * pruning.size(mask))) / kept
    prune = pruning.STRATEGIES[spec.pruning.strategy]
    return prune(load_tensors(before.final, "final weights"), mask, fraction)


def searched_mask(run_dir: Path, spec: RunSpec, source: SnapshotOf, level: int, model: nn.Module) -> Mask:
    """A ticket level's mask that a search level kept when it pruned down to the level's density."""
    snapshot = level_files(run_dir, source.level).mask_for(source.ticket)
    if not snapshot.is_file():
        raise TrainerError(
            f"{snapshot}: missing: the search (level {source.level}) has not reached density "
            f"{spec.pruning.level_density(level):.4f} for level {level}"
        )
    mask = load_tensors(snapshot, "mask")
    pruning.check_mask(mask, model, spec.pruning.ignore_layers, str(snapshot))
    return mask


def rewind_file(run_dir: Path, spec: RunSpec, steps_per_epoch: int, write: bool) -> Path:
    """levels/00/rewind.safetensors, theta_k. With rewindTo auto, level 0 saved every candidate
    point (rewind-at-STEP) and the trainer was given the chosen one: the first pruned job to
    start (rank 0) copies it into place, so every later reader (levels, the exported ticket, a
    transfer) finds the rewind point where it always is; other ranks read the copy's source."""
    root = level_files(run_dir, 0)
    if root.rewind.is_file():
        return root.rewind
    chosen = root.rewind_at(rewind_step(spec, steps_per_epoch))
    if not chosen.is_file():
        return root.rewind
    if write:
        copy_file(chosen, root.rewind)
        return root.rewind
    return chosen


def start_weights(
    run_dir: Path, spec: RunSpec, level: int, plan: LevelPlan, rewind: Path
) -> tuple[Path, dict[str, torch.Tensor]]:
    """Where a pruned level's start weights are, and the weights: the rewind point `rewind`
    (with learning-rate rewinding, level L-1's final weights), or level 0's final weights."""
    root = level_files(run_dir, 0)
    if plan.weights == "trained":
        source = root.final
        if not source.is_file():
            raise TrainerError(f"{source}: missing: level 0 has not finished, so the search cannot start")
    elif spec.pruning.rewind == "weights" or plan.prunes is not None:
        source = rewind
        if plan.prunes is not None and not source.is_file():
            raise TrainerError(f"{source}: missing: level 0 has not finished, so the search cannot start")
    else:
        source = level_files(run_dir, level - 1).final
    return source, load_tensors(source, "start weights")


def start_step(spec: RunSpec, plan: LevelPlan, steps_per_epoch: int) -> tuple[int, int | None]:
    """The first step a pruned level trains and the step it trains to (None: the schedule's end)."""
    if plan.start == "last-epochs":
        assert plan.epochs is not None
        epochs = min(plan.epochs, spec.training.epochs)
        return spec.training.epochs * steps_per_epoch - epochs * steps_per_epoch, None
    step = rewind_step(spec, steps_per_epoch) if plan.start == "rewind" else 0
    if plan.epochs is None:
        return step, None
    return step, search_end(spec, step, plan.epochs, steps_per_epoch)


def search_end(spec: RunSpec, step: int, epochs: int, steps_per_epoch: int) -> int:
    """Where a level that trains `epochs` epochs from `step` stops: that many whole epochs
    after the epoch `step` is in ends, at most the end of the schedule."""
    whole = -(-step // steps_per_epoch) + epochs
    return min(spec.training.epochs, whole) * steps_per_epoch


def plan_start(
    run_dir: Path,
    spec: RunSpec,
    level: int,
    branch: Branch,
    build: Callable[[int], nn.Module],
    steps_per_epoch: int,
    write: bool,
    ticket: TicketFiles | None = None,
) -> LevelStart:
    """Where level `level` of `branch` starts. `build(seed)` makes a fresh network;
    `write` (rank 0) writes the masks and theta_0 that this and later levels read;
    `ticket` is a transfer run's ticket, read at level 0."""
    if level == 0 and branch != "main" and spec.ticket is None:
        raise TrainerError(f"--branch {branch}: control branches start at level 1 (level 0 is the dense run)")
    if level > 0 and branch == "dense":
        raise TrainerError("--branch dense: a control of a transfer run's level 0 only")
    files = level_files(run_dir, level, branch)
    root = level_files(run_dir, 0)
    model = build(spec.training.seed)
    if not (level == 0 and spec.pruning.auto_rewind):  # auto: level 0 saves every candidate
        rewind_step(spec, steps_per_epoch)  # a rewind point past the schedule is refused at every level
    if level == 0 and spec.ticket is not None:
        assert ticket is not None, "the CLI requires a transfer run's ticket flags"
        return transfer_start(run_dir, spec, branch, build, model, ticket, write)
    mask = main_mask(run_dir, spec, level, model, write)
    if level == 0:
        theta_0 = dict(model.state_dict())
        if write and not root.init.is_file():
            save_tensors(root.init, theta_0)
        return LevelStart(mask, theta_0, 0, {"weights": f"init (seed {spec.training.seed})", "step": 0})

    if branch != "main" and not spec.pruning.is_ticket_level(level):
        raise TrainerError(
            f"--branch {branch}: the {spec.pruning.search.method} search level {level} has no controls"
        )
    plan = spec.pruning.method.level_plan(spec, level)
    # Both rewinding modes restart the schedule at step k (Renda et al. 2020): weight rewinding
    # from theta_k, learning-rate rewinding from level L-1's final weights. rewindTo 0: a full replay.
    rewind = rewind_file(run_dir, spec, steps_per_epoch, write)
    source, weights = start_weights(run_dir, spec, level, plan, rewind)
    if set(weights) != set(model.state_dict()):
        raise TrainerError(f"{source}: weights do not fit the model ({spec.model.arch})")
    step, end = start_step(spec, plan, steps_per_epoch)
    origin: dict[str, object] = {"weights": str(source.relative_to(run_dir)), "step": step}
    if plan.prunes is not None:  # it prunes as it trains, from a dense start
        origin["search"] = spec.pruning.search.method
        return LevelStart(mask, weights, step, origin, end_step=end, prunes=plan.prunes)
    origin["rewind"] = spec.pruning.rewind
    starts = BRANCHES[branch]
    if starts.own_init:
        seed = derived_seed(spec.training.seed, level, branch)
        weights = dict(build(seed).state_dict())
        origin["weights"] = f"fresh init (seed {seed})"
    if starts.mask == "random":
        generator = torch.Generator().manual_seed(derived_seed(spec.training.seed, level, branch))
        mask = random_prune_mask(run_dir, spec, level, model, mask, generator)
    if branch != "main" and write and not files.mask.is_file():
        save_tensors(files.mask, mask)
    origin["mask"] = str(files.mask.relative_to(run_dir))
    if plan.search:
        origin["search"] = spec.pruning.search.method
    return LevelStart(mask, weights, step, origin, end_step=end)


def random_prune_mask(
    run_dir: Path, spec: RunSpec, level: int, model: nn.Module, mask: Mask, generator: torch.Generator
) -> Mask:
    """The random-prune control of level L: the ticket's start weights with a random mask that
    keeps the ticket's count in every layer.

    Weight rewinding (open_lth's randomly_prune branch, layerwise): the draw covers the whole
    layer, as theta_k is dense. Learning-rate rewinding: the start weights are level L-1's final
    weights, exactly 0 wherever an earlier level pruned, so the draw is among the weights level
    L-1 kept; the control then differs from the ticket only in removing weights at random
    instead of by magnitude, never in starting from zeros."""
    if spec.pruning.rewind == "weights":
        return pruning.random_like(mask, generator)
    previous = main_mask(run_dir, spec, level - 1, model, write=False)
    return pruning.random_within(previous, mask, generator)


def transfer_start(
    run_dir: Path,
    spec: RunSpec,
    branch: Branch,
    build: Callable[[int], nn.Module],
    model: nn.Module,
    ticket: TicketFiles,
    write: bool,
) -> LevelStart:
    """Level 0 of a transfer run, at step 0 of the target's schedule: the ticket (main),
    or a control from a fresh init: no mask (dense), a random mask with the ticket's
    count in every layer (random-prune), the ticket's mask (random-reinit)."""
    seed = spec.training.seed
    files = level_files(run_dir, 0, branch)
    weights = dict(model.state_dict())  # build(seed): theta_0 of the controls but random-reinit
    starts = BRANCHES[branch]
    if starts.mask == "none":
        mask = pruning.full_mask(model, spec.pruning.ignore_layers)
    else:
        ticketed = transfer(spec, ticket, model, derived_seed(seed, 0, "main"))
        root = level_files(run_dir, 0)
        if write and not root.mask.is_file():  # what level 1 prunes from
            save_tensors(root.mask, ticketed.mask)
        if branch == "main":
            if write and not root.init.is_file():
                save_tensors(root.init, ticketed.weights)
            return LevelStart(ticketed.mask, ticketed.weights, 0, {**ticketed.origin, "step": 0})
        mask = ticketed.mask
        if starts.own_init:
            seed = derived_seed(seed, 0, branch)
            weights = dict(build(seed).state_dict())
        if starts.mask == "random":
            generator = torch.Generator().manual_seed(derived_seed(seed, 0, branch))
            mask = pruning.random_like(mask, generator)
    if write and not files.mask.is_file():
        save_tensors(files.mask, mask)
    origin = {"weights": f"fresh init (seed {seed})", "step": 0, "mask": str(files.mask.relative_to(run_dir))}
    return LevelStart(mask, weights, 0, origin)
