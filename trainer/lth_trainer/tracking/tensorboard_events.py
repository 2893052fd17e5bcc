"""TensorBoard event files of a level, in runs/<name>/tensorboard/<NN>-<branch>/, written with
the tensorboard package's own writer (through torch.utils.tensorboard).

The step is the global epoch, so `tensorboard --logdir runs/<name>/tensorboard` overlays
every level and branch on one axis. A (re)started level opens its writer with `purge_step`
at the epoch it starts from, which hides whatever an earlier attempt wrote from there on,
then writes its start and the checkpoint's epochs again: a level killed at any point and
resumed shows each epoch once, and no step goes backwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lth.api import LevelResult
from lth.api.naming import RunLayout
from lth.storage.tracking import epoch_metrics
from lth_trainer.tracking.base import LevelView

METRIC_TAGS = ("val/top1", "val/loss", "train/loss")
"""The metrics TensorBoard's HParams dashboard shows beside each level's hyperparameters."""


class TensorBoardTracker:
    def __init__(self, view: LevelView) -> None:
        from torch.utils.tensorboard import SummaryWriter

        where = RunLayout(view.run_dir).tensorboard_run(view.level, view.branch)
        self.writer = SummaryWriter(str(where), purge_step=view.start_epoch)
        self.last_step = view.start_epoch
        self._write_start(view)
        for record in view.history:
            self.epoch(record)

    def _write_start(self, view: LevelView) -> None:
        """The level's hyperparameters (HParams dashboard), its density and each layer's."""
        from torch.utils.tensorboard.summary import hparams

        experiment, start, _ = hparams(dict(view.tracked.params), dict.fromkeys(METRIC_TAGS, 0.0))  # type: ignore[no-untyped-call]
        events = self.writer.file_writer
        assert events is not None  # the SummaryWriter opens it
        for summary in (experiment, start):
            events.add_summary(summary, view.start_epoch)
        self.writer.add_scalar("density/all", view.density, view.start_epoch)
        for name, density in sorted(view.layer_densities.items()):
            self.writer.add_scalar(f"density/{name}", density, view.start_epoch)

    def epoch(self, record: Mapping[str, Any]) -> None:
        step, when = int(record["epoch"]), float(record["time"])
        self.last_step = step
        for tag, value in epoch_metrics(record).items():
            self.writer.add_scalar(tag, value, step, walltime=when)
        self.writer.flush()  # curves while it trains, not only every two minutes

    def finish(self, result: LevelResult) -> None:
        from torch.utils.tensorboard.summary import hparams

        _, _, end = hparams({}, {})  # type: ignore[no-untyped-call]
        events = self.writer.file_writer
        assert events is not None
        events.add_summary(end, self.last_step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def start(view: LevelView) -> TensorBoardTracker:
    return TensorBoardTracker(view)
