"""`lth report`: the table, the plot and the exported ticket of a run directory (and its upload)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console

from lth.api import RunStatus
from lth.api.naming import TICKET_FILE
from lth.cli.command import Arg, Command
from lth.cli.status import print_summary
from lth.local.runner import LocalRun
from lth.storage.files import RunNotReadable


def _cmd_report(args: argparse.Namespace) -> int:
    """The ticket and report of a run directory: `lth run` and the export Job both run this."""
    from lth.results.export import write_report

    try:
        status = _report_status(args)
    except RunNotReadable as error:
        return _report_failed(args, str(error))
    console = Console()
    print_summary(console, status)
    ticket = write_report(args.run_dir, status)
    console.print(f"report and ticket: {ticket}")
    from lth.results.tracking import log_to_mlflow

    logged = log_to_mlflow(args.run_dir, status, ticket)
    if logged is not None:
        console.print(logged, markup=False, highlight=False, soft_wrap=True)
    if args.upload and not (ticket / TICKET_FILE).exists():
        console.print(f"nothing uploaded to {args.upload}: no level matched the dense top-1 (no ticket)")
    elif args.upload:
        from lth.storage.objectstore import upload_ticket
        from lth.storage.tickets import TicketError

        try:
            upload_ticket(ticket, args.upload, args.endpoint_url)
        except TicketError as error:
            return _report_failed(args, f"upload to {args.upload} failed: {error}")
        console.print(f"uploaded to: {args.upload}")
    return 0


def _report_failed(args: argparse.Namespace, message: str) -> int:
    """One line on stderr and, in the export Job, the pod's termination message: the run's
    Exported condition then says why in these words, not with the log's tail."""
    print(f"lth report: {message}", file=sys.stderr)
    if args.termination_log:
        from lth.api.workload import write_termination_log

        write_termination_log(args.termination_log, message)
    return 1


def _report_status(args: argparse.Namespace) -> RunStatus:
    """The run's status from `--status-env` (the export Job's: the operator passes the run's
    status, as the pod cannot read the API), else from the run directory's status.json."""
    if args.status_env is None:
        return LocalRun(args.run_dir).read()
    raw = os.environ.get(args.status_env)
    if not raw:
        raise RunNotReadable(f"--status-env {args.status_env}: the variable is not set")
    try:
        return RunStatus.model_validate_json(raw)
    except ValueError as error:
        first = str(error).splitlines()[0]
        raise RunNotReadable(f"--status-env {args.status_env}: not a run status ({first})") from None


COMMANDS = (
    Command(
        "report",
        "write the table, the plot and the exported ticket to RUN_DIR/ticket",
        _cmd_report,
        [
            Arg.of("run_dir", type=Path, metavar="RUN_DIR"),
            Arg.of(
                "--status-env",
                metavar="VAR",
                help="read the run's status (JSON) from this environment variable instead of "
                "RUN_DIR/status.json",
            ),
            Arg.of("--upload", metavar="s3://BUCKET/PREFIX", help="then upload the ticket there"),
            Arg.of(
                "--termination-log",
                metavar="PATH",
                help="write why it failed there too (a pod's termination message)",
            ),
            Arg.of("--endpoint-url", metavar="URL", help="S3 endpoint (MinIO, Ceph); else AWS_ENDPOINT_URL"),
        ],
        "Write RUN_DIR/ticket: the best level's mask, rewind and final weights, ticket.json "
        "(with every file's SHA-256), the model card, the accuracy plot and the learning curves; with "
        "spec.tracking.mlflow, log them to the run's MLflow parent run too. `lth run` does it when a "
        "search ends, the operator's export Job on a cluster.",
    ),
)
