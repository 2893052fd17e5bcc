"""`python -m lth_trainer` / `torchrun ... -m lth_trainer`: train one level of IMP.

The arguments are what lth.api.workload.trainer_arguments builds from the spec; a
transfer run (spec.ticket) also names its ticket: --ticket-run-dir and
--ticket-level (a level of a source run), --ticket-dir (an exported ticket), or
--ticket-url (one to download; level 0 fetches it into the run's source-ticket/).
With rewindTo auto, a pruned level gets the point the instability analysis chose
(--rewind-to), and the analysis' jobs are --stability-point P --stability-part
a|b|path (lth.api.workload.stability_arguments) instead of --level.
Exit 0 with result.json written (or already there), 2 (EXIT_BAD_INPUT) on bad
inputs with a message that names the file, and the same message in the
termination log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

from pydantic import ValidationError

from lth.api import REWIND_PATTERN, STABILITY_PARTS, Branch, LevelResult, RunSpec, StabilityResult
from lth.api.naming import RunLayout
from lth.api.validation import problems_from_error
from lth.api.wire import redact
from lth.api.workload import BAD_INPUT, EXIT_BAD_INPUT, TERMINATION_LOG, write_termination_log
from lth.storage.fetch import download
from lth.storage.files import read_result, read_stability_result
from lth.storage.lifetime import UnsafeLockFile, die_with_parent, exclusive
from lth.storage.tickets import TicketError, TicketFiles
from lth_trainer.start import level_files
from lth_trainer.store import TrainerError

log = logging.getLogger("lth_trainer")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lth_trainer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="the run directory (levels/ is under it)")
    parser.add_argument("--data", type=Path, required=True, help="shards + manifest.json")
    parser.add_argument("--level", type=int, help="IMP level, 0 = dense")
    parser.add_argument("--branch", choices=get_args(Branch), default="main")
    parser.add_argument(
        "--termination-log",
        default=TERMINATION_LOG,
        help="where the compact result goes (ignored when not writable)",
    )
    parser.add_argument("--spec-json", required=True, help="the run's spec, wire form (JSON)")
    parser.add_argument("--ticket-run-dir", type=Path, help="transfer: the source run of the ticket")
    parser.add_argument("--ticket-level", type=int, help="transfer: the source run's level (its ticket)")
    parser.add_argument(
        "--ticket-dir", type=Path, help="transfer: an exported ticket directory (with ticket.json)"
    )
    parser.add_argument("--ticket-url", help="transfer: the http(s) URL of an exported ticket directory")
    parser.add_argument(
        "--rewind-to", help="rewindTo auto: the rewind point the instability analysis chose (0, 0.5ep, 2ep)"
    )
    parser.add_argument(
        "--stability-point", type=int, help="rewindTo auto: a job of the instability analysis at this point"
    )
    parser.add_argument(
        "--stability-part", choices=STABILITY_PARTS, help="that job: copy a, copy b, or the path between them"
    )
    return parser.parse_args(argv)


def resolved_spec(args: argparse.Namespace, spec: RunSpec) -> RunSpec:
    """The spec a pruned level of a rewindTo auto run trains with: rewindTo the analysis' choice."""
    if args.rewind_to is None:
        if spec.pruning.auto_rewind and args.level:
            raise TrainerError(
                f"--rewind-to: spec.pruning.rewindTo is auto, so level {args.level} needs the point "
                "the instability analysis chose"
            )
        return spec
    if not spec.pruning.auto_rewind or not args.level:
        raise TrainerError("--rewind-to: for the pruned levels of a rewindTo auto run only")
    if args.rewind_to == "auto" or not re.fullmatch(REWIND_PATTERN, args.rewind_to):
        raise TrainerError(f"--rewind-to: {args.rewind_to!r} is not a rewind point (0, 500it, 0.5ep, 2ep)")
    pruning = spec.pruning.model_copy(update={"rewind_to": args.rewind_to})
    return spec.model_copy(update={"pruning": pruning})


def which_job(args: argparse.Namespace) -> None:
    """A level (--level), or a job of the instability analysis (--stability-point and -part)."""
    stability = args.stability_point is not None or args.stability_part is not None
    if stability and (args.stability_point is None or args.stability_part is None):
        raise TrainerError("--stability-point and --stability-part: a job of the analysis needs both")
    if stability == (args.level is not None):
        raise TrainerError("--level or --stability-point: give one (a level, or a job of the analysis)")
    if args.level is not None and args.level < 0:
        raise TrainerError(f"--level {args.level}: levels start at 0")


def ticket_files(args: argparse.Namespace, spec: RunSpec) -> TicketFiles | None:
    """Where a transfer run's ticket is. Checked here rather than by an argparse group, so
    a wrong combination exits 2 with its message in the termination log like any bad input."""
    given = [
        flag
        for flag, value in (
            ("--ticket-run-dir", args.ticket_run_dir),
            ("--ticket-level", args.ticket_level),
            ("--ticket-dir", args.ticket_dir),
            ("--ticket-url", args.ticket_url),
        )
        if value is not None
    ]
    if spec.ticket is None:
        if given:
            raise TrainerError(f"{given[0]}: this run has no spec.ticket, so it takes no ticket")
        return None
    if args.ticket_dir is not None or args.ticket_url is not None:
        if len(given) > 1:
            raise TrainerError(
                f"{given[0]}: give one of --ticket-dir, --ticket-url, or --ticket-run-dir with "
                "--ticket-level, not both"
            )
        if args.ticket_url is not None:
            return TicketFiles.from_dir(RunLayout(root=args.run_dir).source_ticket)
        return TicketFiles.from_dir(args.ticket_dir)
    if args.ticket_run_dir is None or args.ticket_level is None:
        raise TrainerError(
            "--ticket-run-dir and --ticket-level, --ticket-dir or --ticket-url: "
            "a transfer run (spec.ticket) needs its ticket"
        )
    if args.ticket_level < 0:
        raise TrainerError(f"--ticket-level {args.ticket_level}: levels start at 0")
    return TicketFiles.from_run(args.ticket_run_dir, args.ticket_level)


def fetch_ticket(url: str, dest: Path) -> None:
    """Download the ticket at `url` (only level 0 reads it); every file's checksum is checked."""
    log.info("downloading the ticket %s into %s", url, dest)
    try:
        download(url, dest)
    except TicketError as error:
        raise TrainerError(f"--ticket-url: {error}") from error


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The run directory is shared by pods that may run as other users of the same group.
    os.umask(0o002)
    # torchrun starts workers in sessions of their own: without this, a killed torchrun (or
    # `lth run`) leaves them training on, beside the next attempt.
    die_with_parent()
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s rank {rank} %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        result = run(args)
    except TrainerError as error:
        message = BAD_INPUT + redact(str(error))
        log.error("%s", message)
        if rank == 0:
            write_termination_log(args.termination_log, message)
        return EXIT_BAD_INPUT
    if rank == 0:
        write_termination_log(args.termination_log, json.dumps(result.to_wire(), separators=(",", ":")))
    return 0


def run(args: argparse.Namespace) -> LevelResult | StabilityResult:
    try:
        spec = RunSpec.model_validate_json(args.spec_json)
    except ValidationError as error:
        problems = "; ".join(str(p) for p in problems_from_error(error, "spec"))
        raise TrainerError(f"--spec-json: invalid spec: {problems}") from None
    which_job(args)
    if args.stability_point is not None:
        return run_stability(args, spec)
    spec = resolved_spec(args, spec)
    ticket = ticket_files(args, spec)
    files = level_files(args.run_dir, args.level, args.branch)
    if files.result.is_file():
        log.info("%s exists: level %d %s is done", files.result, args.level, args.branch)
        return finished_result(files.result)
    if args.ticket_url is not None and args.level == 0:
        fetch_ticket(args.ticket_url, RunLayout(root=args.run_dir).source_ticket)

    from lth_trainer import dist  # torch: only for work to do
    from lth_trainer.training.loop import run_level

    with _one_writer(files.dir, f"level {args.level} {args.branch}"):
        if files.result.is_file():  # done by the writer this one waited for
            return finished_result(files.result)
        platform = dist.start()
        try:
            return run_level(args.run_dir, args.data, spec, args.level, args.branch, platform, ticket)
        finally:
            dist.stop(platform)


def run_stability(args: argparse.Namespace, spec: RunSpec) -> StabilityResult:
    """One job of the instability analysis (rewindTo auto): a copy, or the path between them."""
    if not spec.pruning.auto_rewind:
        raise TrainerError(f"--stability-point: spec.pruning.rewindTo is {spec.pruning.rewind_to}, not auto")
    point, part = args.stability_point, args.stability_part
    files = RunLayout(args.run_dir).stability(point, part)
    finished = read_stability_result(files.result)
    if finished is not None:
        return finished

    from lth_trainer import dist  # torch: only for work to do
    from lth_trainer.training.stability import run_copy, run_path

    with _one_writer(files.dir, f"stability point {point} {part}"):
        finished = read_stability_result(files.result)
        if finished is not None:
            return finished
        platform = dist.start()
        try:
            if part == "path":
                return run_path(args.run_dir, args.data, spec, point, platform)
            return run_copy(args.run_dir, args.data, spec, point, part, platform)
        finally:
            dist.stop(platform)


def finished_result(path: Path) -> LevelResult:
    """The result.json of a level that is done; one that is not a result is bad input."""
    result = read_result(path)
    if result is None:
        raise TrainerError(f"{path}: not a level result (remove it to train the level again)")
    return result


@contextlib.contextmanager
def _one_writer(level_dir: Path, what: str) -> Iterator[None]:
    """Rank 0 holds the level directory: a second trainer on the same level waits for it."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    try:
        with exclusive(level_dir, what):
            yield
    except UnsafeLockFile as error:
        raise TrainerError(str(error)) from None
