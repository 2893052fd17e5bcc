"""`lth`: the command line of the control plane, on top of every other layer.

Each module holds a group of subcommands and lists them in its COMMANDS table (`Command`):
specs (validate, render, crd), run, status (status, watch), report, ticket (inspect, fetch,
upload). The parser is built from those tables in this order.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lth.cli import report, run, specs, status, ticket
from lth.cli.command import build_parser

DESCRIPTION = "Find lottery tickets: IMP with rewinding, on Kubernetes or locally."


def parser() -> argparse.ArgumentParser:
    return build_parser(
        DESCRIPTION,
        [specs.COMMANDS, run.COMMANDS, status.COMMANDS, report.COMMANDS, ticket.COMMANDS],
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
