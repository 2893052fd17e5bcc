"""Where a level's curves go besides progress.jsonl: one module per tracker, looked up in
TRACKERS (TensorBoard event files for every level; MLflow when spec.tracking.mlflow names a
server).

Rank 0 runs them, at the level's start, after each epoch's checkpoint and at its end. A
tracker that fails (a full disk, a bug, a server that MLflow's client gives up on) is named
once in the log and dropped for the rest of the level: tracking never fails a level.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from lth.api import Branch, LevelResult
from lth.storage.tracking import TrackedLevel, level_params, one_line
from lth_trainer import pruning
from lth_trainer.tracking import mlflow_runs, tensorboard_events
from lth_trainer.tracking.base import LevelView, Tracker
from lth_trainer.training.setup import LevelRun

log = logging.getLogger("lth_trainer")

TRACKERS: dict[str, Callable[[LevelView], Tracker | None]] = {
    "tensorboard": tensorboard_events.start,
    "mlflow": mlflow_runs.start,
}


class Trackers:
    """The level's trackers, each call contained: one that raises is dropped, not the level."""

    def __init__(self, view: LevelView | None) -> None:
        self.active: dict[str, Tracker] = {}
        if view is None:
            return
        for name, start in TRACKERS.items():
            tracker = self._call(name, partial(start, view))
            if tracker is not None:
                self.active[name] = tracker

    def _call(self, name: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except Exception as error:  # a tracker's trouble is never the level's
            log.warning("%s: %s; this level goes on without it", name, one_line(error))
            self.active.pop(name, None)
            return None

    def epoch(self, record: Mapping[str, Any]) -> None:
        for name, tracker in list(self.active.items()):
            self._call(name, partial(tracker.epoch, record))

    def finish(self, result: LevelResult) -> None:
        for name, tracker in list(self.active.items()):
            self._call(name, partial(tracker.finish, result))

    def close(self) -> None:
        for name, tracker in list(self.active.items()):
            self._call(name, tracker.close)
        self.active.clear()


def level_view(
    run: LevelRun, run_dir: Path, level: int, branch: Branch, start_mask: pruning.Mask
) -> LevelView:
    """The level at its start, as the trackers see it (the density start.json has)."""
    start_epoch = run.start_step // run.steps_per_epoch
    density = pruning.density(start_mask)
    layers = {name: float(keep.float().mean()) for name, keep in start_mask.items()}
    params = level_params(run.spec, level, branch, density, start_epoch)
    return LevelView(
        spec=run.spec,
        run_dir=run_dir,
        level=level,
        branch=branch,
        start_epoch=start_epoch,
        density=density,
        layer_densities=layers,
        history=list(run.counters.history),
        tracked=TrackedLevel(level, branch, params, density, start_epoch, time.time()),
    )


def start_trackers(
    run: LevelRun, run_dir: Path, level: int, branch: Branch, start_mask: pruning.Mask
) -> Trackers:
    """Rank 0's trackers of the level; the other ranks track nothing (nor does the
    instability analysis: its copies are not levels)."""
    return Trackers(level_view(run, run_dir, level, branch, start_mask) if run.platform.is_main else None)
