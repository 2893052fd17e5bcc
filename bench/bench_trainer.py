"""Trainer benchmarks (not tests): masked vs dense step time, input pipeline vs decode
alone, and, when a CUDA GPU is present, ResNet-50 images/s with real shards vs synthetic
tensors. Prints the figures that bench/RESULTS.md records.

    PYTHONPATH=operator:trainer:. python bench/bench_trainer.py [--images 1500] [--gpu-only]

Every ratio is measured in one run, the two sides interleaved so that other work on a
shared machine slows both alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import simplejpeg
import torch
import torch.nn.functional as F
from torch import nn

from lth.api import RunSpec
from lth_trainer import pruning
from lth_trainer.data.device import Inputs
from lth_trainer.data.index import index_split, load_manifest
from lth_trainer.data.loader import ShardDataset, TrainBatches, loader
from lth_trainer.models import build_model
from lth_trainer.optim import build_optimizer
from lth_trainer.training.evaluation import precision_for
from tests.trainer.shards import write_shards


def photo_like(count: int, size: int, seed: int) -> list[tuple[np.ndarray, int]]:
    """Smooth colour fields plus grain: JPEG sizes near real 224 px photos (~20-30 KB at q90)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    out = []
    for i in range(count):
        f = rng.uniform(1, 6, size=(3, 2))
        phase = rng.uniform(0, 6.3, size=3)
        base = np.stack([np.sin(f[c, 0] * 6 * x + f[c, 1] * 6 * y + phase[c]) for c in range(3)], axis=-1)
        image = 127 + 90 * base + rng.normal(0, 6, size=(size, size, 3))
        out.append((np.clip(image, 0, 255).astype(np.uint8), i % 10))
    return out


def timed(fn: Callable[[], None], repeats: int) -> float:
    began = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - began) / repeats


def masked_vs_dense(arch: str, size: int, batch: int, device: torch.device, rounds: int, steps: int) -> None:
    """One model, one batch; the masked step also zeroes pruned gradients (80 % pruned)."""
    model = build_model(arch, 10, size, 0).to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    spec = RunSpec.model_validate(
        {"dataset": {"path": "x"}, "training": {"optimizer": "sgd", "precision": "bf16"}}
    )
    optimizer = build_optimizer(spec.training, model)
    precision = precision_for(spec, device)
    mask = pruning.prune_global_magnitude(dict(model.state_dict()), pruning.full_mask(model, []), 0.8)
    pairs = pruning.gradient_masks(dict(model.named_parameters()), mask)  # the weights' strides
    weights, keeps = [w for w, _ in pairs], [k for _, k in pairs]
    x = torch.randn(batch, 3, size, size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)

    def step(masked: bool) -> None:
        with precision.context():
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        if masked:
            pruning.mask_gradients(weights, keeps)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    timed(lambda: step(True), 3)
    times: dict[bool, list[float]] = {False: [], True: []}
    for round_ in range(rounds):  # alternate which goes first, so neither gets the warmer cache
        for masked in (False, True) if round_ % 2 else (True, False):
            times[masked].append(timed(lambda masked=masked: step(masked), steps))  # type: ignore[misc]
    d, m = statistics.median(times[False]), statistics.median(times[True])
    print(f"masked vs dense step, {arch} {size}px batch {batch} on {device.type}: "
          f"dense {1000 * d:.2f} ms, masked {1000 * m:.2f} ms, ratio {m / d:.3f} (goal <= 1.03)")  # fmt: skip


def pipeline_vs_decode(data_dir: Path, crop: int, rounds: int) -> None:
    """Images/s of one core: JPEG decode alone (bytes in memory) vs the trainer's loader
    (read from the shard, decode, crop/resize/flip, collate) with no worker processes."""
    manifest = load_manifest(data_dir)
    index = index_split(data_dir, manifest, "train")
    count = len(index)
    blobs = ShardDataset(index, crop, False, 0)._reads(np.arange(count, dtype=np.int64))
    batch = 64
    batches = TrainBatches(count, batch, 0, 1, 0)

    def decode_only() -> None:
        for blob in blobs[: batches.steps_per_epoch * batch]:
            simplejpeg.decode_jpeg(blob, colorspace="RGB")

    def pipeline(augment: bool) -> Callable[[], None]:
        def go() -> None:
            dataset = ShardDataset(index, crop, augment, 0)
            for _ in loader(dataset, batches.from_step(0, 1), workers=0, pin=False):
                pass

        return go

    images = batches.steps_per_epoch * batch
    rates: dict[str, list[float]] = {"decode": [], "eval": [], "train": []}
    for _ in range(rounds):
        rates["decode"].append(images / timed(decode_only, 1))
        rates["eval"].append(images / timed(pipeline(False), 1))
        rates["train"].append(images / timed(pipeline(True), 1))
    r = {k: statistics.median(v) for k, v in rates.items()}
    size = manifest.image_size
    kb = sum(len(b) for b in blobs) / len(blobs) / 1024
    print(f"input pipeline, {size}px JPEGs ({kb:.0f} KB), one core: decode only {r['decode']:.0f} images/s; "
          f"eval loader (center crop {crop}) {r['eval']:.0f} = {r['eval'] / r['decode']:.2f}x; "
          f"train loader (random-resized-crop {crop} + flip) {r['train']:.0f} = "
          f"{r['train'] / r['decode']:.2f}x (goal >= 0.8x)")  # fmt: skip


def whole_photos(count: int, seed: int) -> list[tuple[np.ndarray, int]]:
    """As the Spark job stores ImageNet with resize: whole at a 256 short side: the long side
    of each image from ImageNet's aspects (1 to 1.5, either way round; 469x387 becomes 310x256)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, (image, label) in enumerate(photo_like(count, 256, seed)):
        long = int(rng.integers(256, 385))
        resized = torch_resize(image, (256, long) if i % 3 else (long, 256))
        out.append((resized, label))
    return out


def torch_resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with torch (the trainer has no OpenCV)."""
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    resized = F.interpolate(tensor, size=shape, mode="bilinear", antialias=True, align_corners=False)
    return resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def whole_shards(data_dir: Path, images: int) -> Path:
    whole = {"resize": "whole", "image_size": 256, "short_side": 256, "max_side": 512}
    splits = {"train": whole_photos(images, 2), "val": whole_photos(64, 3)}
    write_shards(data_dir, splits, 10, per_shard=512, quality=90, parameters=whole)
    return data_dir


def whole_loader_vs_decode(data_dir: Path, crop: int, rounds: int) -> None:
    """Images/s of one core from whole stored images: JPEG decode alone of the same files vs the
    trainer's loader (header, crop box over the whole image, decode at the DCT scale that covers
    it, the crop cut into the batch, collate) with no worker processes; the device's resize is not
    counted, as in pipeline_vs_decode."""
    manifest = load_manifest(data_dir)
    index = index_split(data_dir, manifest, "train")
    train = ShardDataset(index, crop, True, 0, whole=True)
    blobs = train._reads(np.arange(len(index)))
    batch = 64
    batches = TrainBatches(len(index), batch, 0, 1, 0)
    images = batches.steps_per_epoch * batch

    def decode_only() -> None:
        for blob in blobs[:images]:
            simplejpeg.decode_jpeg(blob, colorspace="RGB")

    def pipeline(augment: bool) -> Callable[[], None]:
        def go() -> None:
            dataset = ShardDataset(index, crop, augment, 0, whole=True)
            for _ in loader(dataset, batches.from_step(0, 1), workers=0, pin=False):
                pass

        return go

    rates: dict[str, list[float]] = {"decode": [], "train": [], "eval": []}
    for _ in range(rounds):
        rates["decode"].append(images / timed(decode_only, 1))
        rates["train"].append(images / timed(pipeline(True), 1))
        rates["eval"].append(images / timed(pipeline(False), 1))
    r = {k: statistics.median(v) for k, v in rates.items()}
    kb = sum(len(b) for b in blobs) / len(blobs) / 1024
    print(f"Loader from whole stored images (short side 256, long 256-384, {kb:.0f} KB), one core: "
          f"decode only {r['decode']:.0f} images/s; train loader (random-resized-crop {crop} + flip, "
          f"torchvision's defaults) {r['train']:.0f} = {r['train'] / r['decode']:.2f}x (goal >= 0.8x); "
          f"eval loader (resize 256, center {crop}) {r['eval']:.0f} = "
          f"{r['eval'] / r['decode']:.2f}x")  # fmt: skip


def gpu_real_vs_synthetic(data_dir: Path, batch: int, steps: int, workers: int) -> None:
    """ResNet-50, bf16 autocast, channels_last, SGD: images/s per GPU fed by the trainer's
    loader from shards (random-resized-crop 224) vs the same uint8 batch kept on the GPU."""
    device = torch.device("cuda", 0)
    manifest = load_manifest(data_dir)
    index = index_split(data_dir, manifest, "train")
    spec = RunSpec.model_validate(
        {"dataset": {"path": "x"}, "training": {"optimizer": "sgd", "precision": "bf16"}}
    )
    model: nn.Module = build_model("resnet50", 1000, 224, 0).to(device)
    model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(spec.training, model)
    precision = precision_for(spec, device)
    inputs = Inputs(manifest.mean, manifest.std, device, 224)
    mask = pruning.prune_global_magnitude(dict(model.state_dict()), pruning.full_mask(model, []), 0.8)
    pairs = pruning.gradient_masks(dict(model.named_parameters()), mask)
    weights, keeps = [w for w, _ in pairs], [k for _, k in pairs]

    def step(images: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor) -> None:
        with precision.context():
            loss = F.cross_entropy(model(inputs(images, boxes)), labels.to(device, non_blocking=True))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        pruning.mask_gradients(weights, keeps)
        optimizer.step()

    dataset = ShardDataset(index, 224, True, 0)
    batches = TrainBatches(len(index), batch, 0, 1, 0)
    epochs = -(-(steps + 10) // batches.steps_per_epoch)
    stream = iter(loader(dataset, batches.from_step(0, epochs), workers=workers, pin=True))
    for _ in range(10):  # warm up: cudnn autotune, workers filling their queues
        step(*next(stream))
    torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(steps):
        step(*next(stream))
    torch.cuda.synchronize()
    real = steps * batch / (time.perf_counter() - began)

    images, labels, boxes = (t.to(device) for t in next(stream))  # the same crops, already on the GPU
    for _ in range(5):
        step(images, labels, boxes)
    torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(steps):
        step(images, labels, boxes)
    torch.cuda.synchronize()
    synthetic = steps * batch / (time.perf_counter() - began)
    print(f"ResNet-50 bf16 channels_last, batch {batch}, {torch.cuda.get_device_name(device)}, "
          f"{workers} loader workers: real shards {real:.0f} images/s, synthetic {synthetic:.0f} images/s, "
          f"ratio {real / synthetic:.3f} (goal >= 0.95, and >= 3000 images/s on an H100)")  # fmt: skip


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1536, help="train images in the synthetic shards")
    parser.add_argument("--size", type=int, default=224, help="side of the shard images")
    parser.add_argument("--gpu-only", action="store_true", help="only the ResNet-50 GPU figure")
    parser.add_argument("--whole-only", action="store_true", help="only the loader from whole stored images")
    parser.add_argument("--gpu-batch", type=int, default=256)
    parser.add_argument("--gpu-steps", type=int, default=100)
    parser.add_argument(
        "--data", type=Path, help="write the shards here and keep them (bench/gpu_check.sh trains on them)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        data_dir = args.data or Path(tmp) / "data"
        splits = {"train": photo_like(args.images, args.size, 0), "val": photo_like(256, args.size, 1)}
        # As the Spark job records the default protocol: the whole center square of the short side.
        stored = {"image_size": args.size, "resize": "center-crop", "short_side": args.size}
        write_shards(data_dir, splits, 10, per_shard=512, quality=90, parameters=stored)
        if args.whole_only:
            args.gpu_only = True
            torch.set_num_threads(1)
            whole_loader_vs_decode(whole_shards(Path(tmp) / "whole", args.images), 224, rounds=3)
        if not args.gpu_only:
            torch.set_num_threads(1)
            masked_vs_dense("smallcnn", 28, 60, torch.device("cpu"), rounds=15, steps=20)
            masked_vs_dense("resnet18", 64, 32, torch.device("cpu"), rounds=7, steps=2)
            pipeline_vs_decode(data_dir, min(224, args.size), rounds=3)
            whole_loader_vs_decode(whole_shards(Path(tmp) / "whole", args.images), 224, rounds=3)
        if torch.cuda.is_available():
            torch.set_num_threads(os.cpu_count() or 1)
            torch.backends.cudnn.benchmark = True
            masked_vs_dense("resnet50", 224, 256, torch.device("cuda", 0), rounds=5, steps=10)
            gpu_real_vs_synthetic(data_dir, args.gpu_batch, args.gpu_steps, workers=(os.cpu_count() or 2) - 1)
        else:
            print("no CUDA GPU: ResNet-50 real-vs-synthetic figure skipped")


if __name__ == "__main__":
    run()
