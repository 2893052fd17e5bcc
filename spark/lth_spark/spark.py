"""The Spark side: a lean session and a mapper that runs one task per item, with progress in the log."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pyspark import SparkContext
from pyspark.sql import SparkSession

log = logging.getLogger("lth_spark")

# Only Spark's pandas-based APIs care, and this job uses none of them.
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)

PROGRESS_SECONDS = 10.0

LEAN_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
"""The JVM only schedules tasks and moves a few bytes per task; the Python workers do the work.
Quick (C1) compilation and a serial GC cut its CPU time during a job by about 2/3 (bench/RESULTS.md);
the same options suit the executors of a SparkApplication (spark.executor.extraJavaOptions)."""


def _package_roots() -> list[str]:
    """Folders that hold lth_spark and lth, so Python workers import the same code as the driver."""
    import lth
    import lth_spark

    roots = {str(Path(m.__file__ or "").resolve().parents[1]) for m in (lth_spark, lth)}
    return sorted(roots)


def under_spark_submit() -> bool:
    """spark-submit starts the JVM first and hands the Python driver its gateway."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def session(master: str | None, app_name: str = "lth-prep") -> SparkSession:
    """A session with no UI or console bars; master local[*] unless given or set by spark-submit."""
    builder = SparkSession.builder.appName(app_name)
    if master or not under_spark_submit():
        builder = builder.master(master or "local[*]")
    if not under_spark_submit():  # this process starts the JVM: keep its JIT and GC off the workers' cores
        builder = builder.config("spark.driver.extraJavaOptions", LEAN_JVM_OPTIONS)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers run this interpreter, with its packages
    python_path = os.pathsep.join([*_package_roots(), os.environ.get("PYTHONPATH", "")]).strip(os.pathsep)
    spark = (
        builder.config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.executorEnv.PYTHONPATH", python_path)
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    return spark


def _counted(function: Callable[[Any], dict[str, Any]], counter: Any, item: Any) -> dict[str, Any]:
    result = function(item)
    counter.add(int(result["images"]))
    return result


class SparkMapper:
    """map(function, items) as one Spark task per item, logging tasks and images done every 10 s.

    Each result must have an "images" count (units and shards both report one).
    """

    def __init__(self, context: SparkContext, progress_seconds: float = PROGRESS_SECONDS) -> None:
        self.context = context
        self.progress_seconds = progress_seconds

    def __call__(
        self, function: Callable[[Any], dict[str, Any]], items: Sequence[Any], what: str
    ) -> list[dict[str, Any]]:
        if not items:
            return []
        counter = self.context.accumulator(0)
        started = time.monotonic()
        done = threading.Event()

        def report() -> None:
            while not done.wait(self.progress_seconds):
                tracker = self.context.statusTracker()
                finished = sum(
                    info.numCompletedTasks
                    for stage in tracker.getActiveStageIds()
                    if (info := tracker.getStageInfo(stage)) is not None
                )
                elapsed = time.monotonic() - started
                log.info(
                    "%s: %d/%d tasks done, %d images, %.0f images/s",
                    what,
                    finished,
                    len(items),
                    counter.value,
                    counter.value / elapsed,
                )

        reporter = threading.Thread(target=report, daemon=True)
        reporter.start()
        try:
            self.context.setJobDescription(what)
            results: list[dict[str, Any]] = (
                self.context.parallelize(list(items), len(items))
                .map(lambda item: _counted(function, counter, item))
                .collect()
            )
        finally:
            done.set()
        elapsed = time.monotonic() - started
        log.info(
            "%s: %d tasks, %d images in %.1f s (%.0f images/s)",
            what,
            len(items),
            counter.value,
            elapsed,
            counter.value / max(elapsed, 1e-9),
        )
        return results
