"""The instability analysis' jobs (rewindTo auto; Frankle, Dziugaite, Roy, Carbin 2020).

A copy (part a or b) of ladder point k trains as a pruned level would from that point: theta_k
(saved by level 0), a fresh optimizer, the schedule from step k to the horizon, dense or with
the one-shot magnitude mask of level 0's final weights (spec.pruning.stability.density); each
copy draws its data order and augmentation from a seed of its own, the SGD noise whose effect
is measured. The path (part path) evaluates the networks on the straight line between the two
copies' final weights, at evenly spaced points, both ends included: every floating-point
tensor of the state (BatchNorm's running statistics too) is interpolated, integer counters are
copy a's. Its instability is the largest top-1 error on the path minus the mean of its ends'.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lth.api import STABILITY_PARTS, RunSpec, StabilityPart, StabilityResult
from lth.api.naming import LevelLayout, RunLayout
from lth.api.pruning import epochs_text, instability, step_of
from lth_trainer import pruning
from lth_trainer.data.device import Inputs
from lth_trainer.data.loader import ShardDataset
from lth_trainer.dist import Platform
from lth_trainer.models import check_input
from lth_trainer.start import LevelStart, level_files, pruned_after
from lth_trainer.store import TrainerError, load_tensors, save_tensors, write_text
from lth_trainer.training.evaluation import evaluate, precision_for
from lth_trainer.training.loop import last_epoch, train, trained_epochs
from lth_trainer.training.setup import (
    Job,
    LevelData,
    level_data,
    network_builder,
    prepare_run,
)

log = logging.getLogger("lth_trainer")


def copy_seed(seed: int, point: int, part: StabilityPart) -> int:
    """The data order and augmentation seed of one copy: its own, and none of a level's."""
    stream = [seed, 0x57AB, point, STABILITY_PARTS.index(part)]
    return int(np.random.SeedSequence(stream).generate_state(1)[0])


def point_epochs(spec: RunSpec, point: int) -> float:
    ladder = spec.pruning.stability.ladder(spec.training.epochs)
    if not 0 <= point < len(ladder):
        raise TrainerError(f"--stability-point {point}: the ladder has points 0 to {len(ladder) - 1}")
    return ladder[point]


def write_result(files: LevelLayout, result: StabilityResult, platform: Platform) -> StabilityResult:
    if platform.is_main:
        write_text(files.result, json.dumps(result.to_wire(), separators=(",", ":")) + "\n")
    platform.barrier()
    return result


def copy_mask(run_dir: Path, spec: RunSpec, model: nn.Module) -> pruning.Mask:
    """Dense, or (spec.pruning.stability.density below 1) level 0's final weights pruned once by
    global magnitude to that density."""
    density = spec.pruning.stability.density
    if density == 1:
        return pruning.full_mask(model, spec.pruning.ignore_layers)
    return pruned_after(run_dir, spec, 0, 1, model, density)


def run_copy(
    run_dir: Path, data_dir: Path, spec: RunSpec, point: int, part: StabilityPart, platform: Platform
) -> StabilityResult:
    """Train one copy from ladder point `point` to the horizon; its final weights and result."""
    epochs = point_epochs(spec, point)
    files = RunLayout(run_dir).stability(point, part)
    seeded = spec.model_copy(
        update={
            "training": spec.training.model_copy(update={"seed": copy_seed(spec.training.seed, point, part)})
        }
    )
    data = level_data(run_dir, data_dir, seeded, platform)
    spe = data.batches.steps_per_epoch
    step = step_of(epochs, spe)
    build, _ = network_builder(spec, data)
    fresh = build(spec.training.seed)
    check_input(fresh, spec.model.arch, data.crop)
    source = level_files(run_dir, 0).rewind_at(step)
    if not source.is_file():
        raise TrainerError(f"{source}: missing: level 0 has not passed step {step} (k={epochs_text(epochs)})")
    mask = copy_mask(run_dir, spec, fresh)
    if platform.is_main and not files.mask.is_file():
        save_tensors(files.mask, mask)
    horizon = spec.pruning.stability.horizon(spec.training.epochs) * spe
    origin: dict[str, object] = {
        "weights": str(source.relative_to(run_dir)),
        "step": step,
        "dataSeed": seeded.training.seed,
        "mask": str(files.mask.relative_to(run_dir)),
    }
    start = LevelStart(
        mask, load_tensors(source, "the rewind point's weights"), step, origin, end_step=horizon
    )
    job = Job({"stability": point, "part": part}, f"stability k={epochs_text(epochs)} copy {part}")
    run, train_data, batches, start_mask = prepare_run(seeded, files, data, start, fresh, platform, job, {})
    train(run, train_data, batches, start_mask)
    if platform.is_main:
        save_tensors(files.final, dict(run.model.state_dict()))
    result = StabilityResult(
        point=point,
        part=part,
        epochs=epochs,
        step=step,
        top1=last_epoch(run)["top1"],
        density=pruning.density(start_mask),
        trained_epochs=trained_epochs(run),
        duration_seconds=run.elapsed(),
    )
    return write_result(files, result, platform)


Weights = dict[str, torch.Tensor]


def interpolate(a: Weights, b: Weights, alpha: float) -> Weights:
    """(1 - alpha) a + alpha b for every floating-point tensor; a's integer tensors (counters)."""
    return {
        name: torch.lerp(tensor, b[name], alpha) if tensor.is_floating_point() else tensor
        for name, tensor in a.items()
    }


def path_errors(
    spec: RunSpec, data: LevelData, finals: tuple[Weights, Weights], model: nn.Module, platform: Platform
) -> list[float]:
    """Top-1 error (100 - top-1, percent, the whole val split) at each evenly spaced point of the path."""
    training = spec.training
    _, num_classes = network_builder(spec, data)
    val = ShardDataset(data.val, data.crop, False, training.seed, data.whole)
    inputs = Inputs(data.manifest.mean, data.manifest.std, platform.device, data.crop)
    precision = precision_for(spec, platform.device)
    model.to(platform.device)
    if platform.device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    errors = []
    points = spec.pruning.stability.interpolation_points
    for alpha in np.linspace(0.0, 1.0, points).tolist():
        model.load_state_dict(interpolate(*finals, alpha))
        batch = training.batch_size // platform.world_size
        metrics = evaluate(model, val, inputs, precision, platform, batch, training.workers, num_classes)
        top1 = metrics["top1"]
        assert top1 is not None
        errors.append(round(100.0 - top1, 4))
        log.info("stability path: alpha %.2f, top-1 error %.2f%%", alpha, errors[-1])
    return errors


def run_path(run_dir: Path, data_dir: Path, spec: RunSpec, point: int, platform: Platform) -> StabilityResult:
    """Evaluate the straight path between the two copies of `point`; its errors and instability."""
    epochs = point_epochs(spec, point)
    layout = RunLayout(run_dir)
    files = layout.stability(point, "path")
    finals = []
    for part in ("a", "b"):
        final = layout.stability(point, part).final
        if not final.is_file():
            raise TrainerError(f"{final}: missing: copy {part} of k={epochs_text(epochs)} has not finished")
        finals.append(load_tensors(final, f"copy {part}'s final weights"))
    data = level_data(run_dir, data_dir, spec, platform)
    build, _ = network_builder(spec, data)
    model = build(spec.training.seed)
    if set(finals[0]) != set(model.state_dict()) or set(finals[1]) != set(finals[0]):
        raise TrainerError(f"{files.dir}: the copies' weights do not fit the model ({spec.model.arch})")
    errors = path_errors(spec, data, (finals[0], finals[1]), model, platform)
    step = step_of(epochs, data.batches.steps_per_epoch)
    result = StabilityResult(
        point=point, part="path", epochs=epochs, step=step, errors=errors, instability=instability(errors)
    )
    return write_result(files, result, platform)
