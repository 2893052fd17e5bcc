"""`python -m lth_spark --input IN --output OUT --spec-json JSON [--master local[2]]`.

The same file is spark-submit's main application file (`spark-submit
spark/lth_spark/__main__.py --input ...`, or the SparkApplication's
mainApplicationFile), so it uses absolute imports only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

if not __package__:  # run as a file by spark-submit: import the package, not its modules as top-level ones
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from pydantic import ValidationError
from pyspark.sql import SparkSession

from lth.api import RunSpec
from lth.api.validation import problems_from_error
from lth.api.wire import redact
from lth.api.workload import BAD_INPUT, EXIT_BAD_INPUT, write_termination_log
from lth_spark.inputs import InputError
from lth_spark.job import Job, run
from lth_spark.spark import SparkMapper, session


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lth_spark",
        description="Preprocess ImageNet archives or an image-folder tree into shards and manifest.json.",
    )
    parser.add_argument(
        "--input", required=True, type=Path, help="the input folder (spec.dataset.path, resolved)"
    )
    parser.add_argument(
        "--output", required=True, type=Path, help="the data folder to write (the run's data/)"
    )
    parser.add_argument(
        "--termination-log",
        default=None,
        help="where to say why the job failed on its input (the driver container's termination message)",
    )
    parser.add_argument("--spec-json", required=True, help="the run's spec, wire form (camelCase JSON)")
    parser.add_argument(
        "--master", default=None, help="Spark master; default local[*], or what spark-submit was given"
    )
    return parser.parse_args(argv)


def _log_progress() -> None:
    """The job's own lines on stderr, whatever pyspark did to the root logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    logger = logging.getLogger("lth_spark")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    _log_progress()
    # The run directory is shared by pods that may run as other users of the same group.
    os.umask(0o002)

    def bad_input(message: str) -> int:
        message = redact(message)
        print(f"error: {message}", file=sys.stderr)
        if arguments.termination_log:
            write_termination_log(arguments.termination_log, BAD_INPUT + message)
        return EXIT_BAD_INPUT

    try:
        spec = RunSpec.model_validate(json.loads(arguments.spec_json))
    except ValidationError as error:
        return bad_input("--spec-json: " + "; ".join(str(p) for p in problems_from_error(error, "spec")))
    except (ValueError, RecursionError) as error:
        return bad_input(f"--spec-json: not JSON ({error})")
    job = Job(arguments.input, arguments.output, spec.dataset, spec.preprocessing)
    sessions: list[SparkSession] = []

    def start_spark() -> SparkMapper:
        sessions.append(session(arguments.master))
        return SparkMapper(sessions[0].sparkContext)

    try:
        run(job, start_spark)
    except InputError as error:
        return bad_input(str(error))
    finally:
        for spark in sessions:
            spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
