"""`lth run`: a whole LotteryTicketRun on this machine; rerun to resume."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from rich.markup import escape

from lth.cli.command import Arg, Command
from lth.cli.status import print_summary


def _cmd_run(args: argparse.Namespace) -> int:
    from lth.local.console import ConsoleDisplay
    from lth.local.executor import LocalExecutor, RunError
    from lth.local.runner import run_local

    display = ConsoleDisplay()
    # `kill` and a closing terminal stop the children too, as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    try:
        executor = LocalExecutor.from_file(args.spec, args.root, args.nproc)
        status = run_local(executor, display)
    except RunError as error:
        # one line, not wrapped at the console's width, so a path in it can be copied whole
        display.console.print(f"[red]error:[/] {escape(str(error))}", soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        display.console.print("\nstopped; run the same command again to go on where it stopped")
        return 130
    print_summary(display.console, status)
    export = status.export
    if export is not None and export.phase == "Failed":
        display.console.print(
            f"[red]the search succeeded, its export failed:[/] {escape(export.message or '')}; "
            f"`lth report {executor.layout.root}` writes it again",
            soft_wrap=True,
        )
        return 1
    display.console.print(f"report and ticket: {executor.layout.ticket}")
    if export is not None and export.url:
        display.console.print(f"uploaded to: {export.url}")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


COMMANDS = (
    Command(
        "run",
        "run a LotteryTicketRun on this machine (Spark local mode, torchrun); rerun to resume",
        _cmd_run,
        [
            Arg.of("spec", type=Path, metavar="SPEC", help="a LotteryTicketRun YAML file"),
            Arg.of(
                "--root",
                type=Path,
                default=Path("."),
                help="storage root: relative dataset paths start here, the run directory is "
                "ROOT/runs/<name> (default: the current directory)",
            ),
            Arg.of(
                "--nproc", type=int, default=None, help="trainer processes per level (default: GPUs, or 1)"
            ),
        ],
    ),
)
