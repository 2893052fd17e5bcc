"""What tracking costs a level (not a test): one level of smallcnn trained in this process with
no tracker, with TensorBoard (the default), and with MLflow beside it against a live `mlflow
server`, a port that refuses connections, and a server that accepts them and never answers
(MLflow's timeouts as the trainer sets them). Prints the figures bench/RESULTS.md records.

    PYTHONPATH=operator:trainer:. python bench/bench_tracking.py [--epochs 10] [--repeats 3]

The variants are interleaved, their order rotated each round, and compared by medians, so
other work on a shared machine slows all alike.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lth.api import RunSpec
from lth_trainer import tracking
from lth_trainer.cli import main
from tests.mlflow_server import start_server
from tests.trainer.conftest import make_spec, trainer_args
from tests.trainer.shards import pattern_images, write_shards

Trackers = dict[str, Callable[..., object]]


def level_seconds(run_dir: Path, data: Path, spec: RunSpec, trackers: Trackers) -> float:
    saved = dict(tracking.TRACKERS)
    tracking.TRACKERS.clear()
    tracking.TRACKERS.update(trackers)  # type: ignore[arg-type]
    try:
        began = time.perf_counter()
        assert main(trainer_args(run_dir, data, spec, 0)) == 0
        return time.perf_counter() - began
    finally:
        tracking.TRACKERS.clear()
        tracking.TRACKERS.update(saved)


def with_mlflow(spec: RunSpec, uri: str) -> RunSpec:
    return RunSpec.model_validate({**spec.to_wire(), "tracking": {"mlflow": {"trackingUri": uri}}})


def main_bench() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    data = work / "data"
    splits = {"train": pattern_images(10, 2000, 28, 0), "val": pattern_images(10, 500, 28, 1)}
    write_shards(data, splits, 10, 1000)
    spec = make_spec(epochs=args.epochs, batchSize=50)
    server, live = start_server(work)
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))
    refused = f"http://127.0.0.1:{refusing.getsockname()[1]}"
    refusing.close()
    silent_socket = socket.socket()
    silent_socket.bind(("127.0.0.1", 0))
    silent_socket.listen(64)
    silent = f"http://127.0.0.1:{silent_socket.getsockname()[1]}"
    everything: Trackers = dict(tracking.TRACKERS)
    tensorboard: Trackers = {"tensorboard": everything["tensorboard"]}
    variants: dict[str, tuple[RunSpec, Trackers]] = {
        "no tracker": (spec, {}),
        "TensorBoard": (spec, tensorboard),
        "TensorBoard + MLflow, live server": (with_mlflow(spec, live), everything),
        "TensorBoard + MLflow, port refuses": (with_mlflow(spec, refused), everything),
        "TensorBoard + MLflow, server silent": (with_mlflow(spec, silent), everything),
    }
    level_seconds(work / "warm", data, with_mlflow(spec, live), everything)  # the imports, once
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(args.repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            run_spec, trackers = variants[name]
            times[name].append(level_seconds(work / f"{len(times[name])}-{name}", data, run_spec, trackers))
    base = statistics.median(times["no tracker"])
    print(f"level 0 of smallcnn, 2,000 images of 28 px, {args.epochs} epochs, median of {args.repeats}:")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        each = ", ".join(f"{s:.2f}" for s in seconds)
        print(f"  {name:38s} {median:6.2f} s  {median / base:5.2f}x  ({each})")
    server.terminate()
    silent_socket.close()


if __name__ == "__main__":
    main_bench()
