"""`lth validate`, `lth render` and `lth crd`: what a spec is, before anything runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lth.api import LotteryTicketRun
from lth.api.crd import crd_yaml
from lth.api.defaults import WorkloadDefaults, policy_problems, with_training_api
from lth.api.validation import Problem, check_run
from lth.api.workload import default_crop_size, spec_json
from lth.cli.command import Arg, Command
from lth.cluster import render
from lth.cluster.admission import pod_security_refusals
from lth.cluster.kubeconfig import namespace_pod_security
from lth.storage.files import RunNotReadable, UnreadableDocument, read_yaml


def _documents(path: Path) -> tuple[list[object], list[str]]:
    """The YAML documents of a file, or the one line that says why it has none."""
    try:
        documents = [d for d in read_yaml(path) if d is not None]
    except UnreadableDocument as error:
        return [], [str(error)]
    if not documents:
        return [], [f"{path}: holds no document"]
    return documents, []


def _validate_file(path: Path, defaults: WorkloadDefaults | None = None) -> list[str]:
    """Every problem of every LotteryTicketRun document in one YAML file, for a cluster with
    these workload defaults (its trainingApi)."""
    documents, unreadable = _documents(path)
    if unreadable:
        return unreadable
    lines: list[str] = []
    for index, document in enumerate(documents):
        where = f"{path}" if len(documents) == 1 else f"{path}[{index}]"
        problems: list[Problem]
        if not isinstance(document, dict) or document.get("kind") != "LotteryTicketRun":
            kind = document.get("kind") if isinstance(document, dict) else type(document).__name__
            problems = [Problem("kind", f"is {kind!r}, expected 'LotteryTicketRun'")]
        else:
            _, problems = check_run(document, (defaults or WorkloadDefaults()).training_api)
        lines.extend(f"{where}: {problem}" for problem in problems)
    return lines


def _pod_security_warnings(path: Path, level: str, defaults: WorkloadDefaults) -> list[str]:
    """What a namespace enforcing `level` will refuse of each (valid) run in the file."""
    documents, _ = _documents(path)
    lines = []
    for index, document in enumerate(documents):
        where = f"{path}" if len(documents) == 1 else f"{path}[{index}]"
        run = LotteryTicketRun.model_validate(document)
        spec, _ = with_training_api((run.spec, []), None, defaults)
        assert spec is not None
        for refusal in pod_security_refusals(spec, level, defaults):
            lines.append(f"{where}: warning: Pod Security {level} will refuse {refusal}")
    return lines


def _prunable(path: Path) -> tuple[list[str], list[str]]:
    """What each (valid) run in the file prunes, from the trainer (`python -m lth_trainer.prunable`,
    which needs torch), and what the trainer refused of it (a network that cannot be built for its
    crops, ignoreLayers that name nothing); one line saying so where the trainer is not installed."""
    import importlib.util
    import subprocess

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("lth_trainer") is None:
        return [f"{path}: --list-prunable builds the network with torch, which is not installed here "
                "(pip install '.[trainer]')"], []  # fmt: skip
    documents, _ = _documents(path)
    lines, problems = [], []
    for document in documents:
        spec = LotteryTicketRun.model_validate(document).spec
        classes = spec.model.num_classes or (len(spec.dataset.classes) if spec.dataset.classes else None)
        note = "" if classes else " (numClasses comes from the data: 1000 shown)"
        command = [sys.executable, "-m", "lth_trainer.prunable", "--spec-json", spec_json(spec)]
        command += ["--classes", str(classes or 1000), "--crop", str(default_crop_size(spec))]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            problems.append(
                f"{path}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'failed'}"
            )
            continue
        lines += [f"{path}: {line}" for line in done.stdout.splitlines()]
        lines[-1] += note
    return lines, problems


def _cmd_validate(args: argparse.Namespace) -> int:
    try:
        level = args.pod_security or (
            namespace_pod_security(args.namespace) if args.namespace is not None else None
        )
        defaults = render.read_values(args.values).workloads if args.values else WorkloadDefaults()
    except (RunNotReadable, render.RenderError) as error:
        print(f"lth validate: {error}", file=sys.stderr)
        return 2
    failed = False
    for path in args.files:
        lines = _validate_file(path, defaults)
        if lines:
            failed = True
            print("\n".join(lines), file=sys.stderr)
            continue
        warnings = _pod_security_warnings(path, level, defaults) if level else []
        if warnings:
            print("\n".join(warnings), file=sys.stderr)
        if args.list_prunable:
            listing, problems = _prunable(path)
            print("\n".join(listing))
            if problems:
                failed = True
                print("\n".join(problems), file=sys.stderr)
                continue
        print(f"{path}: valid" + (f" ({len(warnings)} warning(s))" if warnings else ""))
    return 1 if failed else 0


def _cmd_render(args: argparse.Namespace) -> int:
    try:
        values = render.read_values(args.values) if args.values is not None else None
    except render.RenderError as error:
        print(f"lth render: {error}", file=sys.stderr)
        return 2
    problems = _validate_file(args.spec, values.workloads if values else None)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    try:
        level = render.parse_level(args.level, "--level")
        branch = render.parse_branch(args.branch)
        ticket_level = render.parse_level(args.ticket_level, "--ticket-level")
        out = []
        for document in read_yaml(args.spec):
            if document is None:
                continue
            run = LotteryTicketRun.model_validate(document)
            refused = policy_problems(run.spec, values.workloads) if values is not None else []
            if refused:  # what the operator would refuse on a cluster with these values
                print("\n".join(f"{args.spec}: {problem}" for problem in refused), file=sys.stderr)
                return 1
            objects = render.children(
                run,
                namespace=render.namespace_of(run, args.namespace),
                level=level,
                branch=branch,
                values=values,
                ticket_level=ticket_level,
                rewind_to=args.rewind_to,
                stability_point=render.parse_level(args.stability_point, "--stability-point"),
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


RENDER_DESCRIPTION = (
    "Print, as YAML documents, the children the operator creates for a LotteryTicketRun: "
    "by default the SparkApplication <run>-prep (none for prepared shards) and level 0's main "
    "job (a PyTorchJob, or a TrainJob with spec.resources.trainingApi or the values' "
    "workloads.trainingApi TrainJob); with --level or --branch, that level's job; with "
    "--stability-point, the jobs of the instability analysis (rewindTo auto) at that point. "
    "Built by the operator's own code; "
    "only the owner uid is a placeholder, so read them, do not apply them."
)

COMMANDS = (
    Command(
        "validate",
        "check LotteryTicketRun files; prints every problem with its field path",
        _cmd_validate,
        [
            Arg.of("files", nargs="+", type=Path, metavar="FILE"),
            Arg.of(
                "--pod-security",
                choices=("baseline", "restricted"),
                help="warn about every pod a namespace enforcing this Pod Security level will refuse",
            ),
            Arg.of(
                "--namespace",
                metavar="NS",
                help="read that level off the namespace (its pod-security.kubernetes.io/enforce label), "
                "through your kubeconfig",
            ),
            Arg.of(
                "--values",
                type=Path,
                metavar="VALUES.yaml",
                help="chart values whose workloads apply (workloads.sparkPodTemplates, say)",
            ),
            Arg.of(
                "--list-prunable",
                action="store_true",
                help="print every weight the run prunes (spec.model.arch, less spec.pruning.ignoreLayers), "
                "with its shape and the classifier head marked; needs the trainer (torch) installed",
            ),
        ],
    ),
    Command(
        "render",
        "print the children the operator would create for a run (as helm template does)",
        _cmd_render,
        [
            Arg.of("spec", type=Path, metavar="RUN.yaml", help="a LotteryTicketRun YAML file"),
            Arg.of("--level", metavar="N", help="render level N's job (0 to the level budget)"),
            Arg.of(
                "--branch",
                metavar="B",
                help="the level's branch: main (default), random-reinit, random-prune, dense",
            ),
            Arg.of(
                "--namespace",
                metavar="NS",
                help="the run's namespace (default: metadata.namespace, else default)",
            ),
            Arg.of(
                "--values",
                type=Path,
                metavar="VALUES.yaml",
                help="chart values: their workloads (trainingApi, images, ...) and "
                "sparkServiceAccount.name (default: the chart's defaults)",
            ),
            Arg.of(
                "--ticket-level",
                metavar="N",
                help="for spec.ticket.run without spec.ticket.level: the source run's best level "
                "(its status.best)",
            ),
            Arg.of(
                "--rewind-to",
                metavar="K",
                help="rewindTo auto: the point its instability analysis chose (status.stability.chosen), "
                "which a pruned level's job rewinds to: 0, 0.5ep, 2ep",
            ),
            Arg.of(
                "--stability-point",
                metavar="P",
                help="rewindTo auto: render the instability analysis' jobs at ladder point P "
                "(copies a and b, and the path between them) instead of a level's",
            ),
        ],
        RENDER_DESCRIPTION,
    ),
    Command("crd", "print the CustomResourceDefinition YAML", _cmd_crd),
)
