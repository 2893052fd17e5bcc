"""`lth`: the command line of the control plane."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from lth.crd import crd_yaml
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


def _cmd_crd(args: argparse.Namespace) -> int:
    sys.stdout.write(crd_yaml())
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

    crd = commands.add_parser("crd", help="print the CustomResourceDefinition YAML")
    crd.set_defaults(func=_cmd_crd)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
