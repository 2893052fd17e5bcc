"""The loop of one level: masked training, evaluation every epoch, a checkpoint every
epoch, then the final weights and result.json (last). The rewind point, progress lines,
evaluation, the checkpoint and the trackers (TensorBoard, MLflow) are hooks at step and
epoch boundaries."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lth.api import Branch, LevelResult, RunSpec
from lth.api.workload import epoch_line as progress_line
from lth.storage.tickets import TicketFiles
from lth_trainer import pruning
from lth_trainer.data.loader import ShardDataset, TrainBatches, loader
from lth_trainer.dist import Platform
from lth_trainer.optim import lr_factor, set_lr
from lth_trainer.start import LevelFiles
from lth_trainer.store import (
    TrainerError,
    save_checkpoint,
    save_tensors,
    write_text,
)
from lth_trainer.tracking import start_trackers
from lth_trainer.training.checkpoint import (
    checkpoint_state,
)
from lth_trainer.training.evaluation import evaluate
from lth_trainer.training.setup import LevelRun, setup_level

log = logging.getLogger("lth_trainer")
LOG_EVERY_SECONDS = 30.0


def write_progress(files: LevelFiles, history: list[dict[str, Any]]) -> None:
    """progress.jsonl, rewritten whole from the checkpoint's history: one line per epoch,
    never a duplicate after a resume."""
    write_text(files.progress, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in history))


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
    run, train_data, batches, start_mask = setup_level(
        run_dir, data_dir, spec, level, branch, platform, ticket
    )
    # Rank 0's trackers; they only flush what they wrote, so a level that fails loses nothing.
    trackers = start_trackers(run, run_dir, level, branch, start_mask)
    mask = train(run, train_data, batches, start_mask, trackers.epoch)
    result = _finish(run, level, branch, mask)
    trackers.finish(result)
    trackers.close()
    log.info("level %d %s done in %.0f s: %s", level, branch, time.perf_counter() - began, result.to_wire())
    return result


def train(
    run: LevelRun,
    train_data: ShardDataset,
    batches: TrainBatches,
    start_mask: pruning.Mask,
    on_epoch: Callable[[dict[str, Any]], None] = lambda record: None,
) -> pruning.Mask:
    """The loop over epochs to the job's last step (each a step loop, then the epoch's hooks,
    then `on_epoch` with the epoch's record), from where its checkpoint left it; the mask it
    ends with."""
    training, platform = run.spec.training, run.platform
    if run.counters.step < run.total_steps:
        stream = iter(
            loader(
                train_data,
                batches.from_step(run.counters.step, training.epochs),
                training.workers,
                platform.device.type == "cuda",
            )
        )
        net = distributed(run.model, run.spec, platform)
        masked = pruning.gradient_masks(dict(run.model.named_parameters()), start_mask)
        while run.counters.step < run.total_steps:
            if run.prunes is not None:
                masked = pruning.gradient_masks(dict(run.model.named_parameters()), run.prunes.mask)
            train_epoch(run, net, stream, masked)
            on_epoch(end_epoch(run))  # after the checkpoint: a resume gives it again
    return run.prunes.mask if run.prunes is not None else start_mask


def end_epoch(run: LevelRun) -> dict[str, Any]:
    """The epoch's hooks: evaluate the model rank 0 saves, record the epoch, checkpoint, log;
    the epoch's record, for the trackers."""
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
        **run.job.fields,
        "epoch": counters.step // run.steps_per_epoch,
        "epochs": training.epochs,
        "step": counters.step,
        "trainLoss": counters.epoch_loss,
        **metrics,
        "imagesPerSecond": counters.epoch_rate,
        "lr": run.optimizer.param_groups[0]["lr"],
        "time": round(time.time(), 3),
    }
    counters.history.append(record)
    if platform.is_main:
        state = checkpoint_state(run.model, run.optimizer, run.precision, counters, platform, run.job.fields)
        save_checkpoint(run.files.checkpoint, state)
        write_progress(run.files, counters.history)
        top1, epoch = metrics["top1"], record["epoch"]
        seconds_per_epoch = counters.elapsed_seconds / len(counters.history)
        # Read off the pod's log by the operator (lth.progress), off the log file locally.
        print(
            progress_line(
                {
                    **run.job.fields,
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
        "%s epoch %d/%d: top1 %.2f%% val loss %.4f, %.0f images/s",
        run.job.label,
        record["epoch"],
        training.epochs,
        metrics["top1"],
        metrics["loss"],
        counters.epoch_rate,
    )
    return record


def last_epoch(run: LevelRun) -> dict[str, Any]:
    """The job's last evaluated epoch (what its result reports)."""
    if not run.counters.history:
        raise TrainerError(f"{run.files.checkpoint}: holds no evaluated epoch")
    return run.counters.history[-1]


def trained_epochs(run: LevelRun) -> float:
    """Passes over the training split from the job's start step to its last: its cost."""
    return round((run.total_steps - run.start_step) / run.steps_per_epoch, 4)


def _finish(run: LevelRun, level: int, branch: Branch, mask: pruning.Mask) -> LevelResult:
    """The level's result from its last evaluated epoch; the final weights and result.json (last)."""
    counters = run.counters
    last = last_epoch(run)
    result = LevelResult(
        level=level,
        branch=branch,
        density=pruning.density(mask),
        top1=last["top1"],
        top5=last["top5"],
        loss=last["loss"],
        epochs=run.spec.training.epochs,
        images_per_second=counters.train_images / counters.train_seconds if counters.train_seconds else None,
        duration_seconds=run.elapsed(),
        trained_epochs=trained_epochs(run),
    )
    if run.platform.is_main:
        save_tensors(run.files.final, dict(run.model.state_dict()))
        write_text(run.files.result, json.dumps(result.to_wire(), separators=(",", ":")) + "\n")
    run.platform.barrier()
    return result


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
        if run.prunes is not None and run.prunes.before_step(counters.step, run.model, run.optimizer):
            counters.mask = run.prunes.mask
            masked = pruning.gradient_masks(dict(run.model.named_parameters()), run.prunes.mask)
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
    """Step hook: theta_k, once the step that reaches k is done (rank 0 of the saving branch;
    with rewindTo auto, at every candidate point)."""
    path = run.rewind_saves.get(run.counters.step)
    if path is not None and run.platform.is_main:
        save_tensors(path, dict(net_module(net).state_dict()))


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
            "%s epoch %d: step %d/%d, %.0f images/s",
            run.job.label,
            run.counters.step // run.steps_per_epoch + 1,
            done,
            steps,
            done * run.spec.training.batch_size / (now - self.began),
        )


def net_module(net: nn.Module) -> nn.Module:
    return net.module if isinstance(net, DistributedDataParallel) else net
