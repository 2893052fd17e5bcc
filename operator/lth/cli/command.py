"""The command line as data: each subcommand is a `Command` in its module's COMMANDS table, and
the parser is built from the tables, so adding a subcommand is adding one entry."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Arg:
    """One `add_argument` call: its flags (or positional name) and keyword options."""

    names: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, *names: str, **options: Any) -> Arg:
        return cls(names, options)


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, its help line and description, its arguments, and what runs it
    (`run` returns the exit code), or subcommands of its own (`lth ticket inspect`)."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], int] | None = None
    arguments: Sequence[Arg] = ()
    description: str | None = None
    subcommands: Sequence[Command] = ()
    dest: str | None = None
    """For a command with subcommands: the attribute that names the chosen one."""

    def add_to(self, commands: Any) -> None:
        """Add this command to an argparse subparsers object."""
        options: dict[str, Any] = {"help": self.help}
        if self.description is not None:
            options["description"] = self.description
        parser = commands.add_parser(self.name, **options)
        for argument in self.arguments:
            parser.add_argument(*argument.names, **argument.options)
        if self.subcommands:
            inner = parser.add_subparsers(dest=self.dest, required=True, metavar="COMMAND")
            for command in self.subcommands:
                command.add_to(inner)
        if self.run is not None:
            parser.set_defaults(func=self.run)


def build_parser(description: str, tables: Sequence[Sequence[Command]]) -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="lth", description=description)
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for table in tables:
        for command in table:
            command.add_to(commands)
    return root
