"""`lth`: the command line of the control plane."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console, RenderableType

from lth import api, remote
from lth.api import LotteryTicketRun, RunStatus
from lth.crd import crd_yaml
from lth.naming import TICKET_FILE
from lth.validation import Problem, check_run


def _validate_file(path: Path) -> list[str]:
    """Every problem of every LotteryTicketRun document in one YAML file."""
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except OSError as error:
        return [f"{path}: cannot read: {error.strerror}"]
    except yaml.YAMLError as error:
        return [f"{path}: not valid YAML: {error}"]
    if not documents:
        return [f"{path}: holds no document"]
    lines: list[str] = []
    for index, document in enumerate(documents):
        where = f"{path}" if len(documents) == 1 else f"{path}[{index}]"
        problems: list[Problem]
        if not isinstance(document, dict) or document.get("kind") != "LotteryTicketRun":
            kind = document.get("kind") if isinstance(document, dict) else type(document).__name__
            problems = [Problem("kind", f"is {kind!r}, expected 'LotteryTicketRun'")]
        else:
            _, problems = check_run(document)
        lines.extend(f"{where}: {problem}" for problem in problems)
    return lines


def _cmd_validate(args: argparse.Namespace) -> int:
    failed = False
    for path in args.files:
        lines = _validate_file(path)
        if lines:
            failed = True
            print("\n".join(lines), file=sys.stderr)
        else:
            print(f"{path}: valid")
    return 1 if failed else 0


def _cmd_render(args: argparse.Namespace) -> int:
    from lth import render

    problems = _validate_file(args.spec)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    try:
        level = render.parse_level(args.level, "--level")
        branch = render.parse_branch(args.branch)
        ticket_level = render.parse_level(args.ticket_level, "--ticket-level")
        values = render.read_values(args.values) if args.values is not None else None
        out = []
        for document in yaml.safe_load_all(args.spec.read_text()):
            if document is None:
                continue
            run = LotteryTicketRun.model_validate(document)
            objects = render.children(
                run,
                namespace=render.namespace_of(run, args.namespace),
                level=level,
                branch=branch,
                values=values,
                ticket_level=ticket_level,
            )
            out.append(render.to_yaml(objects, str(args.spec)))
    except render.RenderError as error:
        print(f"lth render: {error}", file=sys.stderr)
        return 2
    sys.stdout.write("".join(out))
    return 0


def _cmd_crd(args: argparse.Namespace) -> int:
    sys.stdout.write(crd_yaml())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from lth.console import ConsoleDisplay
    from lth.local import LocalExecutor, RunError, run_local

    display = ConsoleDisplay()
    # `kill` and a closing terminal stop the children too, as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    try:
        executor = LocalExecutor.from_file(args.spec, args.root, args.nproc)
        status = run_local(executor, display)
    except RunError as error:
        display.console.print(f"[red]error:[/] {error}")
        return 1
    except KeyboardInterrupt:
        display.console.print("\nstopped; run the same command again to go on where it stopped")
        return 130
    _print_summary(display.console, status)
    export = status.export
    if export is not None and export.phase == "Failed":
        display.console.print(
            f"[red]the search succeeded, its export failed:[/] {export.message}; "
            f"`lth report {executor.layout.root}` writes it again"
        )
        return 1
    display.console.print(f"report and ticket: {executor.layout.ticket}")
    if export is not None and export.url:
        display.console.print(f"uploaded to: {export.url}")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _print_summary(console: Console, status: RunStatus) -> None:
    console.print(_summary(status))


def _summary(status: RunStatus) -> RenderableType:
    """Phase, conditions, the accuracy-vs-density table and the best ticket, as one renderable."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from lth.report import branches, labels, rows, search_note

    parts: list[RenderableType] = []
    head = Text.from_markup(f"phase [bold]{status.phase}[/]")
    if status.level is not None:
        head.append(f", level {status.level}, density {status.density or 0:.4f}")
    parts.append(head)
    if status.ticket is not None:
        parts.append(Text(f"  transfer of the ticket of {status.ticket.source}"))
    for condition in status.conditions:
        if condition.status == "True" or condition.type in ("SpecAccepted", "Exported"):
            parts.append(
                Text(f"  {condition.type}={condition.status} {condition.reason}: {condition.message}")
            )
    table = Table(title="accuracy vs density")
    table.add_column("level", justify="right")
    table.add_column("density", justify="right")
    columns = branches(status)
    for branch in columns:
        table.add_column(f"top-1 {labels(status)[branch]}", justify="right")
    entries: dict[tuple[int, str], api.LevelStatus] = {(e.level, e.branch): e for e in status.levels}
    for row in rows(status):
        cells = [
            f"{row.top1[b]:.2f}" if b in row.top1 else _unfinished_cell(entries.get((row.level, b)))
            for b in columns
        ]
        table.add_row(f"{row.level}{search_note(status, row.level)}", f"{row.density * 100:.2f}%", *cells)
    if status.levels:
        parts.append(table)
    for entry in status.levels:
        if entry.progress is not None and entry.phase == "Running":
            parts.append(Text(f"level {entry.level} ({entry.branch}): {_epoch_line(entry.progress)}"))
    if status.best is not None:
        parts.append(
            Text(
                f"best ticket: level {status.best.level}, density {status.best.density * 100:.2f}%, "
                f"top-1 {status.best.top1:.2f}% (dense {status.dense_top1:.2f}%)"
            )
        )
    if status.cost is not None:
        from lth.cost import describe

        parts.append(Text(describe(status.cost, status.accepted_spec)))
    return Group(*parts)


def _unfinished_cell(entry: api.LevelStatus | None) -> str:
    """A level without a result: its phase, and its epoch while it runs ('running 37/90')."""
    if entry is None:
        return ""
    if entry.phase == "Running" and entry.progress is not None:
        return f"running {entry.progress.epoch}/{entry.progress.epochs}"
    return entry.phase.lower()


def _epoch_line(progress: api.EpochProgress) -> str:
    parts = [f"epoch {progress.epoch}/{progress.epochs}"]
    if progress.top1 is not None:
        parts.append(f"top-1 {progress.top1:.2f}%")
    if progress.images_per_second is not None:
        parts.append(f"{progress.images_per_second:,.0f} images/s")
    if progress.estimated_finish is not None:
        parts.append(f"ends about {progress.estimated_finish:%Y-%m-%d %H:%M} UTC")
    return ", ".join(parts)


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        status = remote.source(args.run, args.namespace).read()
    except remote.RunNotReadable as error:
        print(f"lth status: {error}", file=sys.stderr)
        return 1
    _print_summary(Console(), status)
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    """The status, redrawn until the run ends (or Ctrl-C); a read that fails ends it with exit 1."""
    from rich.live import Live

    try:
        run = remote.source(args.run, args.namespace)
        status = run.read()
        with Live(_summary(status), console=Console(), auto_refresh=False) as live:
            while status.phase not in api.TERMINAL_PHASES:
                time.sleep(args.interval)
                status = run.read()
                live.update(_summary(status), refresh=True)
    except remote.RunNotReadable as error:
        print(f"lth watch: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0 if status.phase == "Succeeded" else 1


def _cmd_report(args: argparse.Namespace) -> int:
    """The ticket and report of a run directory: `lth run` and the export Job both run this."""
    from lth.report import write_report

    try:
        status = _report_status(args)
    except remote.RunNotReadable as error:
        return _report_failed(args, str(error))
    console = Console()
    _print_summary(console, status)
    ticket = write_report(args.run_dir, status)
    console.print(f"report and ticket: {ticket}")
    if args.upload and not (ticket / TICKET_FILE).exists():
        console.print(f"nothing uploaded to {args.upload}: no level matched the dense top-1 (no ticket)")
    elif args.upload:
        from lth.objectstore import upload_ticket
        from lth.ticket import TicketError

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
        from lth.commands import write_termination_log

        write_termination_log(args.termination_log, message)
    return 1


def _report_status(args: argparse.Namespace) -> RunStatus:
    """The run's status from `--status-env` (the export Job's: the operator passes the run's
    status, as the pod cannot read the API), else from the run directory's status.json."""
    if args.status_env is None:
        return remote.LocalRun(args.run_dir).read()
    raw = os.environ.get(args.status_env)
    if not raw:
        raise remote.RunNotReadable(f"--status-env {args.status_env}: the variable is not set")
    try:
        return RunStatus.model_validate_json(raw)
    except ValueError as error:
        first = str(error).splitlines()[0]
        raise remote.RunNotReadable(f"--status-env {args.status_env}: not a run status ({first})") from None


SCHEMES = "http(s)://HOST/PATH/ (a ticket directory served over HTTP) or s3://BUCKET/PREFIX"
S3_ENV = (
    "s3:// URLs use the AWS_* environment variables: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY "
    "(AWS_SESSION_TOKEN), AWS_REGION, and AWS_ENDPOINT_URL for MinIO, Ceph and the like"
)


def _fetch_ticket(url: str, dest: Path, endpoint_url: str | None) -> Path:
    """A ticket at an http(s):// or s3:// URL, fetched into `dest` and verified."""
    from lth.objectstore import fetch_ticket
    from lth.ticket import TicketError, download

    if url.startswith("s3://"):
        return fetch_ticket(url, dest, endpoint_url)
    if not url.startswith(("http://", "https://")):
        raise TicketError(f"{url}: not a ticket URL ({SCHEMES})")
    if endpoint_url is not None:
        raise TicketError(f"--endpoint-url applies to s3:// URLs, not {url}")
    return download(url, dest)


def _print_ticket(info: dict[str, Any]) -> None:
    print(
        f"ticket of run {info.get('run')} level {info.get('level')}: {info.get('architecture')}, "
        f"{info.get('numClasses')} classes, density {info['density'] * 100:.2f}%, top-1 {info.get('top1')} "
        f"(dense {info.get('denseTop1')})"
    )
    for name, layer in info["layers"].items():
        print(f"  {name:40s} {layer['kept']:>10,d} / {layer['total']:>10,d}  {layer['density'] * 100:6.2f}%")
    _print_verified(info)


def _print_verified(info: dict[str, Any]) -> None:
    for name, file in info["files"].items():
        print(f"  {name}: sha256 {file['sha256'][:16]}... verified")


def _cmd_ticket_inspect(args: argparse.Namespace) -> int:
    from lth.ticket import TicketError, inspect

    try:
        if "://" in args.ticket:
            with tempfile.TemporaryDirectory(prefix="lth-ticket-") as temporary:
                info = inspect(_fetch_ticket(args.ticket, Path(temporary), args.endpoint_url))
        elif args.endpoint_url is not None:
            raise TicketError(f"--endpoint-url applies to s3:// URLs, not {args.ticket}")
        else:
            info = inspect(Path(args.ticket))
    except TicketError as error:
        print(f"lth ticket inspect: {error}", file=sys.stderr)
        return 1
    _print_ticket(info)
    return 0


def _cmd_ticket_fetch(args: argparse.Namespace) -> int:
    from lth.ticket import TicketError, inspect

    try:
        info = inspect(_fetch_ticket(args.url, args.dest, args.endpoint_url))
    except TicketError as error:
        print(f"lth ticket fetch: {error}", file=sys.stderr)
        return 1
    _print_verified(info)
    print(f"ticket in {args.dest}")
    return 0


def _cmd_ticket_upload(args: argparse.Namespace) -> int:
    from lth.objectstore import upload_ticket
    from lth.ticket import TicketError

    try:
        urls = upload_ticket(args.ticket, args.url, args.endpoint_url)
    except TicketError as error:
        print(f"lth ticket upload: {error}", file=sys.stderr)
        return 1
    for url in urls:
        print(f"  {url}")
    print(f"ticket uploaded to {args.url}")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="lth", description="Find lottery tickets: IMP with rewinding, on Kubernetes or locally."
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser(
        "validate", help="check LotteryTicketRun files; prints every problem with its field path"
    )
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    validate.set_defaults(func=_cmd_validate)

    render = commands.add_parser(
        "render",
        help="print the children the operator would create for a run (as helm template does)",
        description="Print, as YAML documents, the children the operator creates for a LotteryTicketRun: "
        "by default the SparkApplication <run>-prep (none for prepared shards) and level 0's main "
        "PyTorchJob; with --level or --branch, that level's job. Built by the operator's own code; "
        "only the owner uid is a placeholder, so read them, do not apply them.",
    )
    render.add_argument("spec", type=Path, metavar="RUN.yaml", help="a LotteryTicketRun YAML file")
    render.add_argument("--level", metavar="N", help="render level N's PyTorchJob (0 to the level budget)")
    render.add_argument(
        "--branch", metavar="B", help="the level's branch: main (default), random-reinit, random-prune, dense"
    )
    render.add_argument(
        "--namespace", metavar="NS", help="the run's namespace (default: metadata.namespace, else default)"
    )
    render.add_argument(
        "--values",
        type=Path,
        metavar="VALUES.yaml",
        help="chart values: their workloads and sparkServiceAccount.name (default: the chart's defaults)",
    )
    render.add_argument(
        "--ticket-level",
        metavar="N",
        help="for spec.ticket.run without spec.ticket.level: the source run's best level (its status.best)",
    )
    render.set_defaults(func=_cmd_render)

    crd = commands.add_parser("crd", help="print the CustomResourceDefinition YAML")
    crd.set_defaults(func=_cmd_crd)

    run = commands.add_parser(
        "run",
        help="run a LotteryTicketRun on this machine (Spark local mode, torchrun); rerun to resume",
    )
    run.add_argument("spec", type=Path, metavar="SPEC", help="a LotteryTicketRun YAML file")
    run.add_argument(
        "--root",
        type=Path,
        default=Path("."),
        help="storage root: relative dataset paths start here, the run directory is "
        "ROOT/runs/<name> (default: the current directory)",
    )
    run.add_argument(
        "--nproc", type=int, default=None, help="trainer processes per level (default: GPUs, or 1)"
    )
    run.set_defaults(func=_cmd_run)

    where = (
        "RUN is a run directory when it contains a '/' (runs/NAME, ./NAME), else the name of a "
        "LotteryTicketRun on the cluster of your kubeconfig (namespace: -n, else the context's)"
    )
    status = commands.add_parser("status", help="print where a run stands", description=where)
    status.add_argument("run", metavar="RUN", help="runs/NAME (a run directory) or NAME (on the cluster)")
    status.add_argument("-n", "--namespace", help="the run's namespace on the cluster")
    status.set_defaults(func=_cmd_status)

    watch = commands.add_parser(
        "watch", help="show where a run stands, redrawn until it ends", description=where
    )
    watch.add_argument("run", metavar="RUN", help="runs/NAME (a run directory) or NAME (on the cluster)")
    watch.add_argument("-n", "--namespace", help="the run's namespace on the cluster")
    watch.add_argument("--interval", type=float, default=5.0, help="seconds between reads (default 5)")
    watch.set_defaults(func=_cmd_watch)

    report = commands.add_parser(
        "report",
        help="write the table, the plot and the exported ticket to RUN_DIR/ticket",
        description="Write RUN_DIR/ticket: the best level's mask, rewind and final weights, ticket.json "
        "(with every file's SHA-256), the model card and the accuracy plot. `lth run` does it when a "
        "search ends, the operator's export Job on a cluster.",
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    report.add_argument(
        "--status-env",
        metavar="VAR",
        help="read the run's status (JSON) from this environment variable instead of RUN_DIR/status.json",
    )
    report.add_argument("--upload", metavar="s3://BUCKET/PREFIX", help="then upload the ticket there")
    report.add_argument(
        "--termination-log",
        metavar="PATH",
        help="write why it failed there too (a pod's termination message)",
    )
    report.add_argument(
        "--endpoint-url", metavar="URL", help="S3 endpoint (MinIO, Ceph); else AWS_ENDPOINT_URL"
    )
    report.set_defaults(func=_cmd_report)

    ticket = commands.add_parser(
        "ticket", help="exported tickets: inspect, fetch and upload them", description=S3_ENV
    )
    ticket_commands = ticket.add_subparsers(dest="ticket_command", required=True, metavar="COMMAND")
    endpoint_help = "the S3 endpoint, e.g. http://minio:9000 (default: AWS_ENDPOINT_URL, else AWS)"
    inspect = ticket_commands.add_parser(
        "inspect",
        help="print a ticket's description (ticket.json) after checking every file's checksum",
        description=f"TICKET is a ticket directory or a URL: {SCHEMES}; a URL is fetched into a "
        f"temporary directory first. {S3_ENV}.",
    )
    inspect.add_argument("ticket", metavar="TICKET", help=f"a ticket directory, {SCHEMES}")
    inspect.add_argument("--endpoint-url", metavar="URL", help=endpoint_help)
    inspect.set_defaults(func=_cmd_ticket_inspect)
    fetch = ticket_commands.add_parser(
        "fetch",
        help="download an exported ticket into a directory, checking every file's SHA-256",
        description=f"URL: {SCHEMES}. Files already in DEST with the right checksum are kept; a "
        f"file whose checksum does not match ticket.json is refused. {S3_ENV}.",
    )
    fetch.add_argument("url", metavar="URL", help=SCHEMES)
    fetch.add_argument("dest", type=Path, metavar="DEST", help="the directory to fetch into")
    fetch.add_argument("--endpoint-url", metavar="URL", help=endpoint_help)
    fetch.set_defaults(func=_cmd_ticket_fetch)
    upload = ticket_commands.add_parser(
        "upload",
        help="upload an exported ticket directory to s3://BUCKET/PREFIX (ticket.json last)",
        description=f"The ticket is verified first; each file becomes PREFIX/<name>, ticket.json "
        f"last; uploading again overwrites. {S3_ENV}.",
    )
    upload.add_argument("ticket", type=Path, metavar="TICKET_DIR", help="an exported ticket directory")
    upload.add_argument("url", metavar="URL", help="s3://BUCKET/PREFIX")
    upload.add_argument("--endpoint-url", metavar="URL", help=endpoint_help)
    upload.set_defaults(func=_cmd_ticket_upload)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
