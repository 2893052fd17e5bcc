"""A level's nested MLflow run (spec.tracking.mlflow), sent by a thread of its own.

Training never waits on the server: each epoch only hands the thread its record, and the
thread sends whatever the level's run lacks (lth.storage.tracking), so epochs missed while
the server was away go with the next call that gets through; the export sends what is
still missing at the end. That the server does not answer is said once (and again only
after it answered in between). At the level's end the trainer waits at most FLUSH_SECONDS
for the last epochs, and no longer once a call failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from lth.api import LevelResult, MlflowSpec
from lth.storage.tracking import MlflowRuns, one_line
from lth_trainer.tracking.base import LevelView

log = logging.getLogger("lth_trainer")

FLUSH_SECONDS = 10.0
RETRY_SECONDS = 60.0
"""How often a thread whose server did not answer tries again between epochs."""


class MlflowTracker:
    def __init__(self, view: LevelView, settings: MlflowSpec) -> None:
        self.view, self.settings = view, settings
        self._history = list(view.history)
        self._finished = self._closed = False
        self._reachable: bool | None = None
        """None until the server first answers or fails."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._send, name="lth-mlflow", daemon=True)
        self._wake.set()
        self._thread.start()

    def epoch(self, record: Mapping[str, Any]) -> None:
        with self._lock:
            self._history.append(dict(record))
        self._wake.set()

    def finish(self, result: LevelResult) -> None:
        with self._lock:
            self._finished = True
        self._wake.set()
        deadline = time.monotonic() + FLUSH_SECONDS
        while self._thread.is_alive() and not self.down and time.monotonic() < deadline:
            self._thread.join(0.1)
        if self._thread.is_alive() and not self.down:
            log.warning(
                "MLflow at %s: not done after %.0f s; the level ends, the export sends what it lacks",
                self.settings.tracking_uri,
                FLUSH_SECONDS,
            )

    @property
    def down(self) -> bool:
        """The server did not answer the last call (the thread updates this)."""
        return self._reachable is False

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._wake.set()

    def _send(self) -> None:
        """The thread: sync the level's run on every wake (an epoch, the end, or a retry)."""
        try:
            runs = MlflowRuns(self.settings, self.view.run_dir, self.view.spec)
        except ImportError as error:
            log.warning("spec.tracking.mlflow: %s (install mlflow-skinny); this level is not logged", error)
            return
        while True:
            self._wake.wait(RETRY_SECONDS)
            self._wake.clear()
            with self._lock:
                history, finished, closed = list(self._history), self._finished, self._closed
            if closed and (not finished or self.down):
                return
            try:
                runs.sync_level(self.view.tracked, history, finished)
            except Exception as error:  # whatever the server or the network did: never the level's end
                self._failed(error)
                if closed:
                    return
                continue
            self._answered()
            if finished:
                return

    def _failed(self, error: Exception) -> None:
        if self._reachable is not False:
            log.warning(
                "MLflow at %s does not answer (%s); training goes on, and its run gets the missing "
                "epochs when the server answers again, or from the export",
                self.settings.tracking_uri,
                one_line(error),
            )
        self._reachable = False

    def _answered(self) -> None:
        if self._reachable is False:
            log.info("MLflow at %s answers again", self.settings.tracking_uri)
        self._reachable = True


def start(view: LevelView) -> MlflowTracker | None:
    settings = view.spec.tracking.mlflow
    return MlflowTracker(view, settings) if settings is not None else None
