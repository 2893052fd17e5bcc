"""Everything that tells the branches of a level apart, in one table.

`main` is the IMP ticket; `random-reinit` trains its mask from a fresh init, `random-prune`
a random mask with the same count in every layer; `dense` is a transfer run's dense
control. Adding a control touches this table (and the trainer's start for it), nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ControlBranch = Literal["random-reinit", "random-prune"]
CONTROL_BRANCHES: tuple[ControlBranch, ...] = ("random-reinit", "random-prune")
Branch = Literal["main", "random-reinit", "random-prune", "dense"]
"""main: the IMP level itself (or the transferred ticket); the rest are controls."""
TicketControl = Literal["dense", "random-prune", "random-reinit"]
"""What a transfer run's ticket is compared with on the target (spec.ticket.controls)."""
DEFAULT_TICKET_CONTROLS: tuple[TicketControl, ...] = ("dense", "random-prune")


@dataclass(frozen=True)
class BranchInfo:
    mask: Literal["ticket", "random", "none"]
    """How it starts: the level's (or transferred) ticket mask, a random mask with the ticket's
    count in every layer, or no mask at all."""
    own_init: bool
    """How it starts: from a fresh init of its own seed, not the level's start weights."""
    suffix: str
    """Of the job's and the level directory's names: `<run>-level-03-reinit`, `levels/03-reinit`."""
    seed_offset: int
    """The branch's own stream of the trainer's seed (fresh inits, random masks)."""
    label: str
    """What a search's report calls it."""
    transfer_label: str
    """What a transfer run's report calls it (its controls start from a fresh init)."""
    marker: str | None
    """Its style in the accuracy plot; None: drawn as the dense reference line."""
    transfer_column: int
    """Its column in a transfer run's table: the ticket, then dense, then the random controls.
    (A search's table follows this table's order.)"""


BRANCHES: dict[Branch, BranchInfo] = {
    "main": BranchInfo("ticket", False, "", 0, "IMP ticket", "transferred ticket", "o-", 0),
    "random-reinit": BranchInfo(
        "ticket", True, "-reinit", 1, "random reinit (same mask)", "ticket's mask, fresh init", "s--", 3
    ),
    "random-prune": BranchInfo(
        "random",
        False,
        "-rprune",
        2,
        "random mask (same density per layer)",
        "random mask (same density per layer), fresh init",
        "^:",
        2,
    ),
    "dense": BranchInfo("none", False, "-dense", 3, "dense", "dense, fresh init", None, 1),
}
