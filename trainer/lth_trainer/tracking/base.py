"""What a tracker sees of a level, and what it is asked to do (at the start, after each
epoch, at the end)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lth.api import Branch, LevelResult, RunSpec
from lth.storage.tracking import TrackedLevel


@dataclass(frozen=True)
class LevelView:
    """One level at its start, as rank 0 sees it."""

    spec: RunSpec
    run_dir: Path
    level: int
    branch: Branch
    start_epoch: int
    """The global epoch the level starts at (k's epoch for a rewound level): every tracker's
    step is the global epoch, so all levels share one axis."""
    density: float
    layer_densities: dict[str, float]
    history: list[dict[str, Any]]
    """The epochs already done (a resumed level's checkpoint), as progress.jsonl has them."""
    tracked: TrackedLevel


class Tracker(Protocol):
    def epoch(self, record: Mapping[str, Any]) -> None:
        """One finished epoch (a progress.jsonl record)."""

    def finish(self, result: LevelResult) -> None:
        """The level is done: its result.json is written."""

    def close(self) -> None:
        """Let go of files and threads (also when the level failed)."""
