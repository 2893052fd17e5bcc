"""Live progress of a local run in the terminal (rich)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, cast

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from lth.api import Branch, RunStatus
from lth.api.naming import PROGRESS_FILE, RunLayout, export_name
from lth.local.executor import Launch, Outcome
from lth.local.runner import Display
from lth.plan import EmitEvent


def last_progress(path: Path) -> dict[str, Any] | None:
    """The last complete JSON line of a progress file."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            return record
    return None


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ConsoleDisplay(Display):
    """Events as lines; each running child as a live status line."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.started = time.monotonic()
        self.children: dict[str, tuple[Launch, float]] = {}
        self.status: RunStatus | None = None
        self.layout: RunLayout | None = None
        self.live = Live(console=self.console, refresh_per_second=2, transient=True)

    def event(self, event: EmitEvent) -> None:
        style = "yellow" if event.type == "Warning" else "dim"
        self.console.print(Text(f"{event.reason}: {event.message}", style=style))

    def child_started(self, launch: Launch, status: RunStatus, layout: RunLayout) -> None:
        self.status, self.layout = status, layout
        self.children[launch.name] = (launch, time.monotonic())
        if not self.live.is_started:
            self.live.start()
        self.tick()

    def tick(self) -> None:
        self.live.update(self._render())

    def child_finished(self, launch: Launch, outcome: Outcome) -> None:
        _, started = self.children.pop(launch.name, (launch, time.monotonic()))
        if not self.children:
            self.live.stop()
        took = _clock(time.monotonic() - started)
        if outcome.returncode == 0:
            self.console.print(f"[green]done[/] {launch.name} in {took}")
        else:
            self.console.print(
                f"[red]failed[/] {launch.name} (exit {outcome.returncode}) after {took}; "
                f"log: {launch.log}\n{outcome.log_tail}"
            )

    def _render(self) -> Table:
        table = Table.grid(padding=(0, 2))
        for launch, started in self.children.values():
            table.add_row(*self._row(launch, started))
        return table

    def _row(self, launch: Launch, started: float) -> list[str]:
        status, layout = self.status, self.layout
        assert status is not None and layout is not None
        spent = time.monotonic() - started
        if launch.level is None or launch.branch is None:
            stage = "export" if launch.name == export_name(layout.root.name) else "preprocessing"
            return [
                f"[bold]{stage}[/]",
                launch.name,
                f"{_clock(spent)}",
                f"run {_clock(time.monotonic() - self.started)}",
            ]
        branch = cast(Branch, launch.branch)
        entry = status.level_entry(launch.level, branch)
        row = [f"[bold]level {launch.level}[/] ({launch.branch})"]
        if entry is not None and entry.density is not None:
            row.append(f"density {entry.density * 100:.1f}%")
        progress = last_progress(layout.level_dir(launch.level, branch) / PROGRESS_FILE)
        if progress:
            epoch, epochs = progress.get("epoch"), progress.get("epochs")
            row.append(f"epoch {epoch}/{epochs}")
            if progress.get("top1") is not None:
                row.append(f"top-1 {progress['top1']:.1f}%")
            if progress.get("imagesPerSecond"):
                row.append(f"{progress['imagesPerSecond']:,.0f} img/s")
            if isinstance(epoch, int) and isinstance(epochs, int) and epoch > 0:
                row.append(f"remaining {_clock(spent / epoch * (epochs - epoch))}")
        row.append(f"run {_clock(time.monotonic() - self.started)}")
        return row
