"""What a search method is: the levels it has and how each main level starts, as data.

A method answers from the spec alone: how many search levels come between the dense level 0
and the tickets, the density each main level has, how many levels there are, and a
`LevelPlan` per main level: where its mask comes from, which weights it starts from, which
steps of the schedule it trains, and whether it prunes while it trains. The planner, the
cost model, the report and the trainer read only these; what a level costs and which levels
a ticket took follow from the plans (`planned_epochs`, `ticket_levels`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from lth.api.branches import Branch
    from lth.api.pruning import PruningSpec
    from lth.api.spec import RunSpec

SEARCH_LEVEL = 1
"""gradual search: the level that searches the mask (level 0 is dense, tickets follow it);
short-imp: the first of its short levels."""


@dataclass(frozen=True)
class Dense:
    """No weight pruned."""


@dataclass(frozen=True)
class Transferred:
    """A transfer run's ticket (spec.ticket), which its level 0 starts from."""


@dataclass(frozen=True)
class PrunedFrom:
    """Pruned from main level `level`'s final weights, under its mask: by spec.pruning.fraction,
    or down to `density` exactly."""

    level: int
    density: float | None = None


@dataclass(frozen=True)
class MaskOf:
    """The mask main level `level` trained with."""

    level: int


@dataclass(frozen=True)
class SnapshotOf:
    """The mask that level `level`, which prunes while it trains, had when it reached the
    density of ticket level `ticket` (levels/LL/mask-for-TT)."""

    level: int
    ticket: int


MaskSource = Dense | Transferred | PrunedFrom | MaskOf | SnapshotOf

Weights = Literal["init", "rewind", "trained"]
"""init: a fresh init of the run's seed (theta_0); rewind: the rewind point theta_k (with
learning-rate rewinding, level L-1's final weights); trained: level 0's final weights."""

Start = Literal["zero", "rewind", "last-epochs"]
"""The first step trained: 0; the rewind point k; the start of the schedule's last `epochs`
epochs."""


@dataclass(frozen=True)
class PruneSchedule:
    """Prune steps while the level trains (the gradual search): the densities in order, spread
    evenly over the first `share` of its steps, the first at its start; the mask at each
    ticket's density is kept for that ticket level."""

    densities: tuple[float, ...]
    tickets: tuple[tuple[float, int], ...]
    """(density, ticket level) of each density a ticket level trains."""
    share: float = 0.75


@dataclass(frozen=True)
class LevelPlan:
    """How one main level starts and what it trains (its controls start from the same mask,
    changed as the branch table says)."""

    mask: MaskSource
    weights: Weights
    start: Start
    epochs: int | None = None
    """last-epochs: that many epochs; otherwise the epochs trained from the start's epoch
    boundary (at most to the end of the schedule), or None: to the end of the schedule."""
    prunes: PruneSchedule | None = None
    search: bool = False
    """A search level (its network is not a ticket, and it has no controls)."""


class Method:
    """A value of spec.pruning.search.method; subclasses are the registry's entries."""

    name: str
    words: str
    """What it does, in the model card's words (N: spec.pruning.search.epochs)."""
    searches: bool = True
    """Whether it has search levels and reads spec.pruning.search's densities and epochs."""

    def search_levels(self, pruning: PruningSpec) -> int:
        """Levels between the dense level 0 and the first ticket level."""
        raise NotImplementedError

    def level_density(self, pruning: PruningSpec, level: int) -> float:
        """Expected density of main level `level`."""
        raise NotImplementedError

    def level_budget(self, spec: RunSpec) -> int:
        """Pruned levels after level 0."""
        return self.search_levels(spec.pruning) + len(spec.pruning.ticket_densities())

    def level_plan(self, spec: RunSpec, level: int) -> LevelPlan:
        """How main level `level` starts."""
        raise NotImplementedError

    def is_ticket_level(self, pruning: PruningSpec, level: int) -> bool:
        """A level whose network trains in full from the rewind point (a ticket candidate)."""
        return level >= 1 and level > self.search_levels(pruning)


def first_level(spec: RunSpec) -> LevelPlan:
    """Level 0 of every method: the dense network from theta_0, or a transfer run's ticket."""
    return LevelPlan(Transferred() if spec.ticket is not None else Dense(), "init", "zero")


def planned_epochs(method: Method, spec: RunSpec, level: int, branch: Branch = "main") -> float:
    """Epochs a job will train, from the spec alone: level 0 the whole schedule; a level that
    trains a set number of epochs (a search level) that many; any other from the rewind point
    on (an iteration count, which needs the steps per epoch, and rewindTo auto are counted as
    a full run here; the trainer's result is exact)."""
    epochs = spec.training.epochs
    plan = method.level_plan(spec, level)
    if plan.start == "zero":
        return float(epochs)
    if plan.epochs is not None and branch == "main":
        return float(min(plan.epochs, epochs))
    if spec.pruning.auto_rewind:
        return float(epochs)  # the instability analysis chooses the point: exact in the result
    amount, unit = spec.pruning.rewind_point()
    return float(epochs - amount) if unit == "ep" else float(epochs)


def ticket_levels(method: Method, spec: RunSpec, level: int) -> list[int]:
    """The main levels whose training a level's network needs, itself included: those its mask
    comes from and those its start weights come from."""
    return sorted(_trained(method, spec, level))


def _trained(method: Method, spec: RunSpec, level: int) -> set[int]:
    plan = method.level_plan(spec, level)
    needed = {level} | _mask_needs(method, spec, plan.mask)
    if level > 0 and plan.weights == "trained":
        needed |= _trained(method, spec, 0)
    elif level > 0 and plan.weights == "rewind":
        needed |= _trained(method, spec, 0 if spec.pruning.rewind == "weights" else level - 1)
    return needed


def _mask_needs(method: Method, spec: RunSpec, mask: MaskSource) -> set[int]:
    match mask:
        case Dense() | Transferred():
            return set()
        case PrunedFrom(level=source) | SnapshotOf(level=source):
            return _trained(method, spec, source)
        case MaskOf(level=source):
            return _mask_needs(method, spec, method.level_plan(spec, source).mask)
