"""A level's start: the data, the model at its start (mask applied, or resumed from the
checkpoint), the optimizer, and what the loop reads and updates (`LevelRun`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lth.api import Branch, RunSpec
from lth.api.data_manifest import DataManifest, Split, geometry_mismatch
from lth.api.naming import MANIFEST_FILE, RunLayout
from lth.api.pruning import step_of
from lth.storage.tickets import TicketFiles
from lth_trainer import pruning
from lth_trainer.data.crops import crop_size, evaluation
from lth_trainer.data.device import Inputs
from lth_trainer.data.index import ShardIndex, load_manifest, shared_index
from lth_trainer.data.loader import ShardDataset, TrainBatches
from lth_trainer.dist import Platform
from lth_trainer.models import build_model, check_input
from lth_trainer.optim import build_optimizer
from lth_trainer.prune_steps import PruneSteps, schedule
from lth_trainer.start import LevelFiles, LevelStart, level_files, plan_start, rewind_step
from lth_trainer.store import (
    TrainerError,
    save_tensors,
    write_json,
)
from lth_trainer.training.checkpoint import (
    Counters,
    resume,
)
from lth_trainer.training.evaluation import Precision, precision_for

SPLITS: tuple[Split, Split] = ("train", "val")

log = logging.getLogger("lth_trainer")


def index_file(run_dir: Path, split: Split) -> Path:
    """RUN/index/<split>.npz: the shard index, scanned once per run and read by every rank."""
    return RunLayout(run_dir).index / f"{split}.npz"


@dataclass(frozen=True)
class Job:
    """What a training job is: a level and its branch, or a copy of the instability analysis.
    `fields` go into its checkpoint, start.json and epoch lines (level and branch, or the
    stability point and part); `label` into its log."""

    fields: dict[str, Any]
    label: str


@dataclass
class LevelRun:
    """One level (or copy) in training: what every step and every epoch boundary reads and updates."""

    spec: RunSpec
    job: Job
    files: LevelFiles
    platform: Platform
    steps_per_epoch: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    precision: Precision
    inputs: Inputs
    counters: Counters
    val_data: ShardDataset
    num_classes: int
    rewind_saves: dict[int, Path]
    """Where the weights are saved after the step that reaches each of these steps: theta_k
    (level 0's main branch only; with rewindTo auto, every candidate point)."""
    start_step: int = 0
    """The global step this level starts training at (k for a pruned level)."""
    prunes: PruneSteps | None = None
    """The prune steps of a level that prunes as it trains (the gradual search's level)."""
    end_step: int | None = None
    """The step it trains to; None: the end of the schedule."""
    session: float = field(default_factory=time.perf_counter)
    elapsed_before: float = 0.0

    @property
    def total_steps(self) -> int:
        if self.end_step is not None:
            return self.end_step
        return self.spec.training.epochs * self.steps_per_epoch

    @property
    def local_batch(self) -> int:
        return self.spec.training.batch_size // self.platform.world_size

    def elapsed(self) -> float:
        """Seconds spent on this level, over restarts."""
        return self.elapsed_before + time.perf_counter() - self.session


def saves_rewind_point(level: int, branch: Branch) -> bool:
    """Only the main branch of level 0 saves theta_k; later levels and every control read it."""
    return level == 0 and branch == "main"


@dataclass(frozen=True)
class LevelData:
    """A level's view of the data: the manifest, the crop, both splits' indexes, and this
    rank's share of every training batch."""

    manifest: DataManifest
    crop: int
    train: ShardIndex
    val: ShardIndex
    batches: TrainBatches

    @property
    def whole(self) -> bool:
        """Whole stored images, of varying sizes: cropped and evaluated as torchvision's reference."""
        stored = self.manifest.geometry
        return stored is not None and stored.resize == "whole"

    def dataset(self, index: ShardIndex, augment: bool, spec: RunSpec) -> ShardDataset:
        """A split's samples, at the run's crop, seed and image size limit (maxImagePixels)."""
        seed, max_pixels = spec.training.seed, spec.dataset.max_image_pixels
        return ShardDataset(index, self.crop, augment, seed, self.whole, max_pixels)


def level_data(run_dir: Path, data_dir: Path, spec: RunSpec, platform: Platform) -> LevelData:
    """The manifest, the crop and the indexes (scanned once per run), and the batches; a batch
    size that the processes or the training split cannot take is refused."""
    training = spec.training
    manifest = load_manifest(data_dir)
    mismatch = geometry_mismatch(spec.dataset, manifest, data_dir / MANIFEST_FILE)
    if mismatch:
        raise TrainerError(mismatch)
    crop = crop_size(training.crop_size, manifest, data_dir)
    train_index, val_index = (
        shared_index(
            data_dir, manifest, split, index_file(run_dir, split), platform.is_main, platform.barrier
        )
        for split in SPLITS
    )
    if training.batch_size % platform.world_size:
        raise TrainerError(
            f"spec.training.batchSize: {training.batch_size} does not split over "
            f"{platform.world_size} processes"
        )
    batches = TrainBatches(
        len(train_index), training.batch_size, platform.rank, platform.world_size, training.seed
    )
    if batches.steps_per_epoch == 0:
        raise TrainerError(
            f"spec.training.batchSize: {training.batch_size} is more than the {len(train_index)} train images"
        )
    return LevelData(manifest, crop, train_index, val_index, batches)


def model_at_start(spec: RunSpec, start: LevelStart, model: nn.Module, platform: Platform) -> nn.Module:
    """The network with the start weights, the mask applied, on the device."""
    model.load_state_dict(start.weights)
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, keep in start.mask.items():
            params[name].mul_(keep)
    cuda = platform.device.type == "cuda"
    torch.backends.cudnn.benchmark = cuda  # fixed input shapes: let cuDNN pick its fastest kernels
    model = batch_norm_for(model, spec, platform)
    model.to(platform.device)
    if cuda:
        model.to(memory_format=torch.channels_last)
    return model


def network_builder(spec: RunSpec, data: LevelData) -> tuple[Callable[[int], nn.Module], int]:
    """`build(seed)`: a fresh network for the run's classes and crop; and the class count."""
    num_classes = spec.model.num_classes or data.manifest.num_classes

    def build(seed: int) -> nn.Module:
        return build_model(spec.model.arch, num_classes, data.crop, seed)

    return build, num_classes


def rewind_files(spec: RunSpec, files: LevelFiles, steps_per_epoch: int) -> dict[int, Path]:
    """Where level 0 saves the weights of each rewind point, by step: theta_k (rewind.safetensors);
    with rewindTo auto, theta at every candidate point of the ladder (rewind-at-STEP)."""
    if spec.pruning.auto_rewind:
        ladder = spec.pruning.stability.ladder(spec.training.epochs)
        steps = {step_of(epochs, steps_per_epoch) for epochs in ladder}
        return {step: files.rewind_at(step) for step in sorted(steps)}
    return {rewind_step(spec, steps_per_epoch): files.rewind}


def setup_level(
    run_dir: Path,
    data_dir: Path,
    spec: RunSpec,
    level: int,
    branch: Branch,
    platform: Platform,
    ticket: TicketFiles | None,
) -> tuple[LevelRun, ShardDataset, TrainBatches, pruning.Mask]:
    """The data, the model at its start (mask applied, or resumed from the checkpoint), the
    optimizer; start.json on a first start, theta_0 as the rewind point when k is 0."""
    files = level_files(run_dir, level, branch)
    data = level_data(run_dir, data_dir, spec, platform)
    spe = data.batches.steps_per_epoch
    build, _ = network_builder(spec, data)
    fresh = build(spec.training.seed)
    check_input(fresh, spec.model.arch, data.crop)  # before anything is written
    start = plan_start(run_dir, spec, level, branch, build, spe, write=platform.is_main, ticket=ticket)
    saves = rewind_files(spec, files, spe) if saves_rewind_point(level, branch) else {}
    job = Job({"level": level, "branch": branch}, f"level {level} {branch}")
    return prepare_run(spec, files, data, start, fresh, platform, job, saves)


def prepare_run(
    spec: RunSpec,
    files: LevelFiles,
    data: LevelData,
    start: LevelStart,
    model: nn.Module,
    platform: Platform,
    job: Job,
    saves: dict[int, Path],
) -> tuple[LevelRun, ShardDataset, TrainBatches, pruning.Mask]:
    """A job that trains (a level, or a copy of the instability analysis) at its start: `model`
    (fresh) with the start's weights and mask, the optimizer, resumed from its checkpoint or
    with start.json written; `saves`, the rewind points it saves, by step."""
    training = spec.training
    spe = data.batches.steps_per_epoch
    model = model_at_start(spec, start, model, platform)
    optimizer = build_optimizer(training, model)
    precision = precision_for(spec, platform.device)
    counters = Counters(step=start.step)
    if files.checkpoint.is_file():
        counters = resume(files.checkpoint, model, optimizer, precision, platform, job.fields)
        log.info(
            "%s: resumed from %s at step %d (epoch %d)",
            job.label,
            files.checkpoint,
            counters.step,
            counters.step // spe,
        )
    elif platform.is_main:
        write_json(
            files.start,
            {
                **start.origin,
                **job.fields,
                "density": pruning.density(start.mask),
                "stepsPerEpoch": spe,
                "crop": data.crop,
                "evaluation": evaluation(data.crop, data.manifest),
            },
        )
    if platform.is_main and 0 in saves and not saves[0].is_file():
        save_tensors(saves[0], start.weights)
    prunes = None
    if start.prunes is not None and job.fields.get("branch") == "main":
        steps = schedule(start.prunes, files, start.step, start.end_step or training.epochs * spe)
        prunes = PruneSteps(spec, steps, counters.mask or start.mask, write=platform.is_main)
        counters.mask = prunes.mask
    _, num_classes = network_builder(spec, data)
    run = LevelRun(
        spec=spec,
        job=job,
        files=files,
        platform=platform,
        steps_per_epoch=spe,
        model=model,
        optimizer=optimizer,
        precision=precision,
        inputs=Inputs(data.manifest.mean, data.manifest.std, platform.device, data.crop),
        counters=counters,
        val_data=data.dataset(data.val, False, spec),
        num_classes=num_classes,
        rewind_saves=saves,
        elapsed_before=counters.elapsed_seconds,
        start_step=start.step,
        prunes=prunes,
        end_step=start.end_step,
    )
    augment = training.augmentation == "random-resized-crop"
    return run, data.dataset(data.train, augment, spec), data.batches, start.mask


def batch_norm_for(model: nn.Module, spec: RunSpec, platform: Platform) -> nn.Module:
    """spec.training.syncBatchNorm: BatchNorm over the global batch. PyTorch's SyncBatchNorm
    runs on GPUs only; elsewhere (and in one process) each process normalises its own slice."""
    if not spec.training.sync_batch_norm:
        return model
    if platform.device.type != "cuda" or not platform.distributed:
        log.info("spec.training.syncBatchNorm applies to GPU processes of one group; not used here")
        return model
    converted: nn.Module = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]
    return converted
