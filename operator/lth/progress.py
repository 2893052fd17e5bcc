"""Progress within a level: the trainer's epoch lines, read back off its log.

After each evaluated epoch, the trainer's rank 0 prints one line, `lth-progress {json}`. The
operator reads the master pod's log tail once per resync period, as Katib's stdout metrics
collector reads a trial's, so it needs no volume; the local runner reads the level's log
file. Either way the planner records the latest line in the level's status row.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from lth.api import EpochProgress

PREFIX = "lth-progress "
TAIL_LINES = 50
"""Log lines read per running level: a few epoch lines among warnings and the loader's output."""


def line(record: dict[str, Any]) -> str:
    """The line the trainer prints for one epoch (level, branch, epoch, epochs, top1,
    imagesPerSecond, time: seconds since the epoch, etaSeconds: to the level's end)."""
    return PREFIX + json.dumps(record, separators=(",", ":"))


def latest(log: str, level: int, branch: str) -> EpochProgress | None:
    """The last epoch line of `level`/`branch` in a log tail; None when it holds none."""
    for text in reversed(log.splitlines()):
        at = text.find(PREFIX)
        if at < 0:
            continue
        try:
            record = json.loads(text[at + len(PREFIX) :])
            if record.get("level") != level or record.get("branch") != branch:
                continue
            finish = None
            if record.get("time") is not None and record.get("etaSeconds") is not None:
                when = datetime.fromtimestamp(float(record["time"]), UTC)
                finish = (when + timedelta(seconds=float(record["etaSeconds"]))).replace(microsecond=0)
            top1 = record.get("top1")
            rate = record.get("imagesPerSecond")
            return EpochProgress(
                epoch=int(record["epoch"]),
                epochs=int(record["epochs"]),
                top1=None if top1 is None else round(float(top1), 2),
                images_per_second=None if rate is None else round(float(rate), 1),
                estimated_finish=finish,
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            continue  # a torn or foreign line: look further back
    return None


def summary(level: int, progress: EpochProgress | None) -> str:
    """The Progress printer column: 'L7 37/90' (level 7, epoch 37 of 90), or 'L7' before its first epoch."""
    return f"L{level} {progress.epoch}/{progress.epochs}" if progress else f"L{level}"
