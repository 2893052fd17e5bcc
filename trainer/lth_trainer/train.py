"""The loop of one level: masked training, evaluation every epoch, a checkpoint every
epoch, then the final weights and result.json (last)."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lth.api import SEARCH_LEVEL, Branch, LevelResult, RunSpec
from lth.api.data_manifest import Split
from lth.api.naming import RunLayout
from lth.api.workload import epoch_line as progress_line
from lth.storage.tickets import TicketFiles
from lth_trainer import pruning
from lth_trainer.data import (
    ShardDataset,
    TrainBatches,
    crop_size,
    eval_batches,
    load_manifest,
    loader,
    shared_index,
)
from lth_trainer.dist import Platform
from lth_trainer.level import LevelFiles, level_files, plan_start, rewind_step
from lth_trainer.models import build_model
from lth_trainer.optim import build_optimizer, lr_factor, set_lr
from lth_trainer.search import GradualPruning, schedule
from lth_trainer.store import (
    TrainerError,
    load_checkpoint,
    save_checkpoint,
    save_tensors,
    write_json,
    write_text,
)

log = logging.getLogger("lth_trainer")
LOG_EVERY_SECONDS = 30.0
CHECKPOINT_FORMAT = 1
SPLITS: tuple[Split, Split] = ("train", "val")


def index_file(run_dir: Path, split: Split) -> Path:
    """RUN/index/<split>.npz: the shard index, scanned once per run and read by every rank."""
    return RunLayout(run_dir).index / f"{split}.npz"


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


class Inputs:
    """uint8 NHWC batches -> normalised float NCHW on the device (channels_last on GPU),
    cropped to the crop boxes (random-resized-crop and flip) when the batch has them.

    The crop is one bilinear grid_sample for the whole batch: no antialiasing, which
    matters only for crops much larger than the output (at most 1.14x here for 256 px
    shards and 224 px crops at the largest scale)."""

    def __init__(
        self,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        device: torch.device,
        crop: int,
    ) -> None:
        self.device = device
        self.crop = crop
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255

    def __call__(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()  # channels_last strides
        if boxes.shape[1]:
            x = self.resized_crop(x, boxes.to(self.device, non_blocking=True))
        layout = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        x = x.contiguous(memory_format=layout)
        return x.sub_(self.mean).div_(self.std)

    def resized_crop(self, x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2], x.shape[3]
        top, left, h, w, flip = boxes.unbind(1)
        theta = torch.zeros(len(boxes), 2, 3, device=x.device)
        theta[:, 0, 0] = w / width * (1 - 2 * flip)  # a flip mirrors the sampling grid
        theta[:, 0, 2] = (2 * left + w) / width - 1
        theta[:, 1, 1] = h / height
        theta[:, 1, 2] = (2 * top + h) / height - 1
        grid = F.affine_grid(theta, [len(boxes), 3, self.crop, self.crop], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


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


def write_progress(files: LevelFiles, history: list[dict[str, Any]]) -> None:
    """progress.jsonl, rewritten whole from the checkpoint's history: one line per epoch,
    never a duplicate after a resume."""
    write_text(files.progress, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in history))


@dataclass
class LevelRun:
    """One level in training: what every step and every epoch boundary reads and updates."""

    spec: RunSpec
    level: int
    branch: Branch
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
    rewind_at: int
    """The step after which theta_k is saved; -1 where this branch saves none."""
    start_step: int = 0
    """The global step this level starts training at (k for a pruned level)."""
    search: GradualPruning | None = None
    """The gradual search's prune steps (its level only)."""
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


def run_level(
    run_dir: Path,
    data_dir: Path,
    spec: RunSpec,
    level: int,
    branch: Branch,
    platform: Platform,
    ticket: TicketFiles | None = None,
) -> LevelResult:
    """Setup, the loop over epochs (a step loop, then the epoch's hooks), finish."""
    began = time.perf_counter()
    run, train_data, batches, start_mask = _setup(run_dir, data_dir, spec, level, branch, platform, ticket)
    training = spec.training
    if run.counters.step < run.total_steps:
        stream = iter(
            loader(
                train_data,
                batches.from_step(run.counters.step, training.epochs),
                training.workers,
                platform.device.type == "cuda",
            )
        )
        net = distributed(run.model, spec, platform)
        masked = pruning.gradient_masks(dict(run.model.named_parameters()), start_mask)
        while run.counters.step < run.total_steps:
            if run.search is not None:
                masked = pruning.gradient_masks(dict(run.model.named_parameters()), run.search.mask)
            train_epoch(run, net, stream, masked)
            end_epoch(run)
    result = _finish(run, run.search.mask if run.search is not None else start_mask)
    log.info("level %d %s done in %.0f s: %s", level, branch, time.perf_counter() - began, result.to_wire())
    return result


def _setup(
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
    training = spec.training
    files = level_files(run_dir, level, branch)
    manifest = load_manifest(data_dir)
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
    spe = batches.steps_per_epoch
    if spe == 0:
        raise TrainerError(
            f"spec.training.batchSize: {training.batch_size} is more than the {len(train_index)} train images"
        )
    num_classes = spec.model.num_classes or manifest.num_classes

    def build(seed: int) -> nn.Module:
        return build_model(spec.model.arch, num_classes, crop, seed)

    start = plan_start(run_dir, spec, level, branch, build, spe, write=platform.is_main, ticket=ticket)
    model = build(training.seed)
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
    optimizer = build_optimizer(training, model)
    precision = precision_for(spec, platform.device)
    counters = Counters(step=start.step)
    if files.checkpoint.is_file():
        counters = resume(files.checkpoint, model, optimizer, precision, platform, level, branch)
        log.info(
            "level %d %s: resumed from %s at step %d (epoch %d)",
            level,
            branch,
            files.checkpoint,
            counters.step,
            counters.step // spe,
        )
    elif platform.is_main:
        write_json(
            files.start,
            {
                **start.origin,
                "level": level,
                "branch": branch,
                "density": pruning.density(start.mask),
                "stepsPerEpoch": spe,
                "crop": crop,
                "evaluation": f"center {crop} of the {manifest.image_size} px stored images",
            },
        )
    saves = saves_rewind_point(level, branch)
    rewind_at = rewind_step(spec, spe) if saves else -1
    if saves and platform.is_main and rewind_at == 0 and not files.rewind.is_file():
        save_tensors(files.rewind, start.weights)
    augment = training.augmentation == "random-resized-crop"
    search = None
    if spec.pruning.gradual and level == SEARCH_LEVEL and branch == "main":
        steps = schedule(run_dir, spec, start.step, start.end_step or training.epochs * spe)
        search = GradualPruning(spec, steps, counters.mask or start.mask, write=platform.is_main)
        counters.mask = search.mask
    run = LevelRun(
        spec=spec,
        level=level,
        branch=branch,
        files=files,
        platform=platform,
        steps_per_epoch=spe,
        model=model,
        optimizer=optimizer,
        precision=precision,
        inputs=Inputs(manifest.mean, manifest.std, platform.device, crop),
        counters=counters,
        val_data=ShardDataset(val_index, crop, False, training.seed),
        num_classes=num_classes,
        rewind_at=rewind_at,
        elapsed_before=counters.elapsed_seconds,
        start_step=start.step,
        search=search,
        end_step=start.end_step,
    )
    return run, ShardDataset(train_index, crop, augment, training.seed), batches, start.mask


def end_epoch(run: LevelRun) -> None:
    """The epoch's hooks: evaluate the model rank 0 saves, record the epoch, checkpoint, log."""
    training, counters, platform = run.spec.training, run.counters, run.platform
    platform.broadcast_buffers(run.model)  # evaluate, and save, the model rank 0 saves
    metrics = evaluate(
        run.model,
        run.val_data,
        run.inputs,
        run.precision,
        platform,
        run.local_batch,
        training.workers,
        run.num_classes,
    )
    counters.elapsed_seconds = run.elapsed()
    record = {
        "level": run.level,
        "branch": run.branch,
        "epoch": counters.step // run.steps_per_epoch,
        "epochs": training.epochs,
        "step": counters.step,
        "trainLoss": counters.epoch_loss,
        **metrics,
        "imagesPerSecond": counters.epoch_rate,
        "time": round(time.time(), 3),
    }
    counters.history.append(record)
    if platform.is_main:
        state = checkpoint_state(
            run.model, run.optimizer, run.precision, counters, platform, run.level, run.branch
        )
        save_checkpoint(run.files.checkpoint, state)
        write_progress(run.files, counters.history)
        top1, epoch = metrics["top1"], record["epoch"]
        seconds_per_epoch = counters.elapsed_seconds / len(counters.history)
        # Read off the pod's log by the operator (lth.progress), off the log file locally.
        print(
            progress_line(
                {
                    "level": run.level,
                    "branch": run.branch,
                    "epoch": epoch,
                    "epochs": training.epochs,
                    "top1": None if top1 is None else round(top1, 2),
                    "imagesPerSecond": round(counters.epoch_rate, 1),
                    "time": record["time"],
                    "etaSeconds": round(seconds_per_epoch * (training.epochs - int(epoch or 0)), 1),
                }
            ),
            flush=True,
        )
    log.info(
        "level %d %s epoch %d/%d: top1 %.2f%% val loss %.4f, %.0f images/s",
        run.level,
        run.branch,
        record["epoch"],
        training.epochs,
        metrics["top1"],
        metrics["loss"],
        counters.epoch_rate,
    )


def _finish(run: LevelRun, mask: pruning.Mask) -> LevelResult:
    """The level's result from its last evaluated epoch; the final weights and result.json (last)."""
    counters = run.counters
    last = counters.history[-1] if counters.history else None
    if last is None:
        raise TrainerError(f"{run.files.checkpoint}: holds no evaluated epoch")
    result = LevelResult(
        level=run.level,
        branch=run.branch,
        density=pruning.density(mask),
        top1=last["top1"],
        top5=last["top5"],
        loss=last["loss"],
        epochs=run.spec.training.epochs,
        images_per_second=counters.train_images / counters.train_seconds if counters.train_seconds else None,
        duration_seconds=run.elapsed(),
        trained_epochs=round((run.total_steps - run.start_step) / run.steps_per_epoch, 4),
    )
    if run.platform.is_main:
        save_tensors(run.files.final, dict(run.model.state_dict()))
        write_text(run.files.result, json.dumps(result.to_wire(), separators=(",", ":")) + "\n")
    run.platform.barrier()
    return result


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


def distributed(model: nn.Module, spec: RunSpec, platform: Platform) -> nn.Module:
    """The model under DDP when there are several processes, with bf16 gradient all-reduce when
    spec.training.gradientCompression asks for it (NCCL only)."""
    if not platform.distributed:
        return model
    cuda = platform.device.type == "cuda"
    net = DistributedDataParallel(model, device_ids=[platform.device.index] if cuda else None)
    if spec.training.gradient_compression == "bf16":
        if cuda:
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

            net.register_comm_hook(None, default_hooks.bf16_compress_hook)
        else:
            log.info("spec.training.gradientCompression bf16 applies with NCCL on GPUs; not used here")
    return net


def train_epoch(
    run: LevelRun,
    net: nn.Module,
    stream: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    masked: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> None:
    """Train to the end of the current epoch, pruned weights held at zero; after each step,
    its hooks: the rewind point, and a progress line every LOG_EVERY_SECONDS."""
    training, counters, platform = run.spec.training, run.counters, run.platform
    spe = run.steps_per_epoch
    epoch_end = (counters.step // spe + 1) * spe
    weights = [w for w, _ in masked]
    keeps = [k for _, k in masked]
    loss_sum = torch.zeros((), device=platform.device)
    steps = epoch_end - counters.step
    began = time.perf_counter()
    progress = StepProgress(began)
    while counters.step < epoch_end:
        if run.search is not None and run.search.before_step(counters.step, run.model, run.optimizer):
            counters.mask = run.search.mask
            masked = pruning.gradient_masks(dict(run.model.named_parameters()), run.search.mask)
            weights, keeps = [w for w, _ in masked], [k for _, k in masked]
        images, labels, boxes = next(stream)
        set_lr(run.optimizer, training.lr * lr_factor(training, counters.step, spe))
        x, y = run.inputs(images, boxes), labels.to(platform.device, non_blocking=True)
        with run.precision.context():
            loss = F.cross_entropy(net(x), y)
        run.optimizer.zero_grad(set_to_none=True)
        run.precision.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        if masked:
            pruning.mask_gradients(weights, keeps)
        run.precision.scaler.step(run.optimizer)
        run.precision.scaler.update()
        loss_sum += loss.detach().float()
        counters.step += 1
        save_rewind_point(run, net)
        progress.maybe_log(run, steps - (epoch_end - counters.step), steps)
    seconds = time.perf_counter() - began
    counters.train_seconds += seconds
    counters.train_images += steps * training.batch_size
    counters.epoch_rate = steps * training.batch_size / seconds
    counters.epoch_loss = platform.sum([float(loss_sum)])[0] / (steps * platform.world_size)


def save_rewind_point(run: LevelRun, net: nn.Module) -> None:
    """Step hook: theta_k, once the step that reaches k is done (rank 0 of the saving branch)."""
    if run.counters.step == run.rewind_at and run.platform.is_main:
        save_tensors(run.files.rewind, dict(net_module(net).state_dict()))


@dataclass
class StepProgress:
    """Step hook: the step and images/s on rank 0's log, every LOG_EVERY_SECONDS."""

    began: float
    last: float = 0.0

    def maybe_log(self, run: LevelRun, done: int, steps: int) -> None:
        now = time.perf_counter()
        if not run.platform.is_main or now - max(self.last, self.began) <= LOG_EVERY_SECONDS:
            return
        self.last = now
        log.info(
            "level %d %s epoch %d: step %d/%d, %.0f images/s",
            run.level,
            run.branch,
            run.counters.step // run.steps_per_epoch + 1,
            done,
            steps,
            done * run.spec.training.batch_size / (now - self.began),
        )


def net_module(net: nn.Module) -> nn.Module:
    return net.module if isinstance(net, DistributedDataParallel) else net


def checkpoint_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    counters: Counters,
    platform: Platform,
    level: int,
    branch: Branch,
) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "level": level,
        "branch": branch,
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
    level: int,
    branch: Branch,
) -> Counters:
    state = load_checkpoint(path)
    if (
        state.get("format") != CHECKPOINT_FORMAT
        or state.get("level") != level
        or state.get("branch") != branch
    ):
        raise TrainerError(
            f"{path}: checkpoint of level {state.get('level')} {state.get('branch')}, "
            f"not of level {level} {branch}"
        )
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
