"""`lth status` and `lth watch`: where a run stands, from its run directory or the cluster.

`RUN` on the command line is a local run directory when it contains a `/` (`runs/demo`,
`./demo`, an absolute path), and otherwise the name of a LotteryTicketRun: a bare word is
never guessed to be a folder, so `lth status demo` always asks the cluster."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console, RenderableType

from lth import api
from lth.api import RunStatus
from lth.cli.command import Arg, Command
from lth.cluster.kubeconfig import ClusterRun
from lth.local.runner import LocalRun
from lth.storage.files import RunNotReadable


def print_summary(console: Console, status: RunStatus) -> None:
    console.print(summary(status))


def summary(status: RunStatus) -> RenderableType:
    """Phase, conditions, the accuracy-vs-density table and the best ticket, as one renderable."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from lth.results.tables import branches, labels, rows, search_note

    parts: list[RenderableType] = []
    head = Text.from_markup(f"phase [bold]{status.phase}[/]")
    if status.level is not None:
        head.append(f", level {status.level}, density {status.density or 0:.4f}")
    parts.append(head)
    if status.ticket is not None:
        parts.append(Text(f"  transfer of the ticket of {status.ticket.source}"))
    for condition in status.conditions:
        if condition.status == "True" or condition.type in ("SpecAccepted", "Exported"):
            parts.append(
                Text(f"  {condition.type}={condition.status} {condition.reason}: {condition.message}")
            )
    table = Table(title="accuracy vs density")
    table.add_column("level", justify="right")
    table.add_column("density", justify="right")
    columns = branches(status)
    for branch in columns:
        table.add_column(f"top-1 {labels(status)[branch]}", justify="right")
    entries: dict[tuple[int, str], api.LevelStatus] = {(e.level, e.branch): e for e in status.levels}
    for row in rows(status):
        cells = [
            f"{row.top1[b]:.2f}" if b in row.top1 else _unfinished_cell(entries.get((row.level, b)))
            for b in columns
        ]
        table.add_row(f"{row.level}{search_note(status, row.level)}", f"{row.density * 100:.2f}%", *cells)
    if status.levels:
        parts.append(table)
    parts.extend(_stability(status))
    for entry in status.levels:
        if entry.progress is not None and entry.phase == "Running":
            parts.append(Text(f"level {entry.level} ({entry.branch}): {_epoch_line(entry.progress)}"))
    if status.best is not None:
        parts.append(
            Text(
                f"best ticket: level {status.best.level}, density {status.best.density * 100:.2f}%, "
                f"top-1 {status.best.top1:.2f}% (dense {status.dense_top1:.2f}%)"
            )
        )
    if status.cost is not None:
        from lth.plan.cost import describe

        parts.append(Text(describe(status.cost, status.accepted_spec)))
    return Group(*parts)


def _stability(status: RunStatus) -> list[RenderableType]:
    """rewindTo auto: the instability analysis' table and the point it chose (or that it runs)."""
    from rich.table import Table
    from rich.text import Text

    from lth.results.tables import STABILITY_COLUMNS, stability_rows, stability_summary

    line, stability = stability_summary(status), status.stability
    if line is None or stability is None:
        return []
    table = Table(title="instability analysis (rewindTo auto)")
    for column in STABILITY_COLUMNS:
        table.add_column(column, justify="right")
    for row in stability_rows(status):
        table.add_row(*row)
    running = [j for j in stability.jobs if j.phase in ("Pending", "Running", "Retrying")]
    jobs = [Text(f"  {j.name}: {j.phase.lower()}") for j in running]
    return [table, *jobs, Text(line)] if stability_rows(status) else [*jobs, Text(line)]


def _unfinished_cell(entry: api.LevelStatus | None) -> str:
    """A level without a result: its phase, and its epoch while it runs ('running 37/90')."""
    if entry is None:
        return ""
    if entry.phase == "Running" and entry.progress is not None:
        return f"running {entry.progress.epoch}/{entry.progress.epochs}"
    return entry.phase.lower()


def _epoch_line(progress: api.EpochProgress) -> str:
    parts = [f"epoch {progress.epoch}/{progress.epochs}"]
    if progress.top1 is not None:
        parts.append(f"top-1 {progress.top1:.2f}%")
    if progress.images_per_second is not None:
        parts.append(f"{progress.images_per_second:,.0f} images/s")
    if progress.estimated_finish is not None:
        parts.append(f"ends about {progress.estimated_finish:%Y-%m-%d %H:%M} UTC")
    return ", ".join(parts)


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        status = run_source(args.run, args.namespace).read()
    except RunNotReadable as error:
        print(f"lth status: {error}", file=sys.stderr)
        return 1
    print_summary(Console(), status)
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    """The status, redrawn until the run ends (or Ctrl-C); a read that fails ends it with exit 1."""
    from rich.live import Live

    try:
        run = run_source(args.run, args.namespace)
        status = run.read()
        with Live(summary(status), console=Console(), auto_refresh=False) as live:
            while status.phase not in api.TERMINAL_PHASES:
                time.sleep(args.interval)
                status = run.read()
                live.update(summary(status), refresh=True)
    except RunNotReadable as error:
        print(f"lth watch: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0 if status.phase == "Succeeded" else 1


WHERE = (
    "RUN is a run directory when it contains a '/' (runs/NAME, ./NAME), else the name of a "
    "LotteryTicketRun on the cluster of your kubeconfig (namespace: -n, else the context's)"
)
RUN_ARGUMENTS = (
    Arg.of("run", metavar="RUN", help="runs/NAME (a run directory) or NAME (on the cluster)"),
    Arg.of("-n", "--namespace", help="the run's namespace on the cluster"),
)

COMMANDS = (
    Command("status", "print where a run stands", _cmd_status, RUN_ARGUMENTS, WHERE),
    Command(
        "watch",
        "show where a run stands, redrawn until it ends",
        _cmd_watch,
        [
            *RUN_ARGUMENTS,
            Arg.of("--interval", type=float, default=5.0, help="seconds between reads (default 5)"),
        ],
        WHERE,
    ),
)


def is_local(run: str) -> bool:
    """A run directory (it has a `/`), or a run's name on the cluster (a bare word)."""
    return "/" in run


def run_source(run: str, namespace: str | None) -> ClusterRun | LocalRun:
    if is_local(run):
        if namespace is not None:
            raise RunNotReadable(f"-n/--namespace is for a run on the cluster; {run} is a run directory")
        return LocalRun(Path(run))
    return ClusterRun(run, namespace)
