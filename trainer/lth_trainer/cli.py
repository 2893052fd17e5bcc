"""`python -m lth_trainer` / `torchrun ... -m lth_trainer`: train one level of IMP.

The arguments are what lth.commands.trainer_arguments builds from the spec.
Exit 0 with result.json written (or already there), 1 on bad inputs with a
message that names the file, and the same message in the termination log.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import get_args

from pydantic import ValidationError

from lth.api import Branch, LevelResult, RunSpec
from lth.commands import TERMINATION_LOG
from lth_trainer.level import level_files, read_result
from lth_trainer.store import TrainerError

log = logging.getLogger("lth_trainer")
TERMINATION_LIMIT = 4096


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lth_trainer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="the run directory (levels/ is under it)")
    parser.add_argument("--data", type=Path, required=True, help="shards + manifest.json")
    parser.add_argument("--level", type=int, required=True, help="IMP level, 0 = dense")
    parser.add_argument("--branch", choices=get_args(Branch), default="main")
    parser.add_argument(
        "--termination-log",
        default=TERMINATION_LOG,
        help="where the compact result goes (ignored when not writable)",
    )
    parser.add_argument("--spec-json", required=True, help="the run's spec, wire form (JSON)")
    return parser.parse_args(argv)


def write_termination_log(path: str, message: str) -> None:
    """The container's termination message (Kubernetes reads at most 4 KiB); best effort."""
    try:
        with open(path, "w") as f:
            f.write(message[:TERMINATION_LIMIT])
    except OSError as error:
        log.debug("termination log %s not writable: %s", path, error)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s rank {rank} %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        result = run(args)
    except TrainerError as error:
        log.error("%s", error)
        if rank == 0:
            write_termination_log(args.termination_log, str(error))
        return 1
    if rank == 0:
        write_termination_log(args.termination_log, json.dumps(result.to_wire(), separators=(",", ":")))
    return 0


def run(args: argparse.Namespace) -> LevelResult:
    try:
        spec = RunSpec.model_validate_json(args.spec_json)
    except ValidationError as error:
        raise TrainerError(f"--spec-json: invalid spec: {error}") from error
    if args.level < 0:
        raise TrainerError(f"--level {args.level}: levels start at 0")
    files = level_files(args.run_dir, args.level, args.branch)
    if files.result.is_file():
        log.info("%s exists: level %d %s is done", files.result, args.level, args.branch)
        return read_result(files.result)

    from lth_trainer import dist  # torch: only for work to do
    from lth_trainer.train import run_level

    platform = dist.start()
    try:
        return run_level(args.run_dir, args.data, spec, args.level, args.branch, platform)
    finally:
        dist.stop(platform)
