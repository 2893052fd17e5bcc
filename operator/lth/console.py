"""Live progress of a local run in the terminal (rich)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from lth.api import RunStatus
from lth.local import Display, Launch, Outcome
from lth.naming import RunLayout
from lth.planner import EmitEvent

PROGRESS_FILE = "progress.jsonl"
"""Per-epoch JSON lines a level writes in its directory (epoch, epochs, top1, imagesPerSecond)."""


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
    """Events as lines; the running child as a live status line."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.started = time.monotonic()
        self.child_started_at = self.started
        self.launch: Launch | None = None
        self.status: RunStatus | None = None
        self.layout: RunLayout | None = None
        self.live: Live | None = None

    def event(self, event: EmitEvent) -> None:
        style = "yellow" if event.type == "Warning" else "dim"
        self.console.print(Text(f"{event.reason}: {event.message}", style=style))

    def child_started(self, launch: Launch, status: RunStatus, layout: RunLayout) -> None:
        self.launch, self.status, self.layout = launch, status, layout
        self.child_started_at = time.monotonic()
        self.live = Live(self._render(), console=self.console, refresh_per_second=2, transient=True)
        self.live.start()

    def tick(self) -> None:
        if self.live is not None:
            self.live.update(self._render())

    def child_finished(self, launch: Launch, outcome: Outcome) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        took = _clock(time.monotonic() - self.child_started_at)
        if outcome.returncode == 0:
            self.console.print(f"[green]done[/] {launch.name} in {took}")
        else:
            self.console.print(
                f"[red]failed[/] {launch.name} (exit {outcome.returncode}) after {took}; "
                f"log: {launch.log}\n{outcome.log_tail}"
            )

    def _render(self) -> Group:
        launch, status = self.launch, self.status
        elapsed = time.monotonic() - self.started
        table = Table.grid(padding=(0, 2))
        if launch is None or status is None:
            return Group(table)
        row: list[str] = []
        if launch.level is None:
            row = ["[bold]preprocessing[/]", launch.name]
        else:
            entry = status.level_entry(launch.level, launch.branch)  # type: ignore[arg-type]
            density = f"density {entry.density * 100:.1f}%" if entry and entry.density else ""
            row = [f"[bold]level {launch.level}[/] ({launch.branch})", density]
            assert self.layout is not None
            progress = last_progress(self.layout.level_dir(launch.level, launch.branch) / PROGRESS_FILE)  # type: ignore[arg-type]
            if progress:
                epoch, epochs = progress.get("epoch"), progress.get("epochs")
                row.append(f"epoch {epoch}/{epochs}")
                if progress.get("top1") is not None:
                    row.append(f"top-1 {progress['top1']:.1f}%")
                if progress.get("imagesPerSecond"):
                    row.append(f"{progress['imagesPerSecond']:,.0f} img/s")
                if isinstance(epoch, int) and isinstance(epochs, int) and epoch > 0:
                    spent = time.monotonic() - self.child_started_at
                    row.append(f"level eta {_clock(spent / epoch * (epochs - epoch))}")
        if status.top1 is not None:
            row.append(f"last top-1 {status.top1:.1f}%")
        row.append(f"elapsed {_clock(elapsed)}")
        table.add_row(*row)
        return Group(table)
