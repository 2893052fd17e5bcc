"""`lth run`'s loop: plan, start what the plan creates, wait for a child to end, plan again,
until the run is done; one runner per run directory."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lth.api import RunStatus
from lth.api.naming import RunLayout
from lth.local.executor import (
    Launch,
    LocalExecutor,
    Outcome,
    RunError,
)
from lth.plan import (
    EmitEvent,
)
from lth.storage import files
from lth.storage.files import RunNotReadable
from lth.storage.lifetime import UnsafeLockFile, open_lock_file

PROGRESS_SECONDS = 5.0
"""How often the local runner copies its running levels' latest epochs into status.json."""


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """One `lth run` per run directory: a second one is refused while the first holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        handle = open_lock_file(run_dir / ".lock")
    except UnsafeLockFile as error:
        raise RunError(str(error)) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise RunError(f"{run_dir} is in use by `lth run` ({owner}); wait for it or stop it first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


class Display:
    """What the runner tells its user; the console version is in lth.local.console."""

    def event(self, event: EmitEvent) -> None: ...

    def child_started(self, launch: Launch, status: RunStatus, layout: RunLayout) -> None: ...

    def child_finished(self, launch: Launch, outcome: Outcome) -> None: ...

    def tick(self) -> None:
        """Called about five times a second while children run."""


def run_local(executor: LocalExecutor, display: Display) -> RunStatus:
    """Run (or resume) a LotteryTicketRun on this machine until it succeeds or fails.

    Children run as the plan allows (spec.resources.maxParallelJobs at once); each
    finished child leads to a new plan.
    """
    executor.on_event = display.event
    with run_lock(executor.layout.root):
        status = executor.load_status()
        plans_without_launch = 0
        try:
            while True:
                result = executor.step(status)
                status = result.status
                if result.done:
                    break
                for action in result.creates:
                    launch = executor.launch(result, action)
                    executor.start(launch, action.attempt)
                    display.child_started(launch, status, executor.layout)
                if not executor.running:
                    # A retry takes two plans: one deletes the failed attempt, the next creates it.
                    plans_without_launch += 1
                    if plans_without_launch > 2:
                        raise RunError(f"{executor.status_file}: the run waits on nothing it can start")
                    continue
                plans_without_launch = 0
                shown = status
                last_read = time.monotonic()

                def tick() -> None:
                    nonlocal shown, last_read
                    display.tick()
                    if time.monotonic() - last_read >= PROGRESS_SECONDS:
                        shown, last_read = executor.show_progress(shown), time.monotonic()

                for launch, outcome in executor.wait_any(tick):
                    display.child_finished(launch, outcome)
                status = shown
        finally:
            executor.stop_all()
    if status.phase == "Failed":
        failed = status.condition("Failed")
        raise RunError(failed.message if failed else "the run failed")
    return status


@dataclass(frozen=True)
class LocalRun:
    """A run directory to read, for `lth status`, `lth watch` and `lth report`."""

    run_dir: Path

    def read(self) -> RunStatus:
        path = RunLayout(self.run_dir).status_file
        status = files.load_status(path)
        if status is None:
            raise RunNotReadable(f"{path}: no such file; is {self.run_dir} a run directory (runs/<name>)?")
        return status
