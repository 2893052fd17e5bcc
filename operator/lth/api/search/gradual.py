"""method gradual: level 0 trains the dense network; level 1, the search, trains the last
search.epochs epochs of the schedule from level 0's final weights (start trained) or
search.epochs epochs from the rewind point (start rewind) while it prunes step by step
(Zhu & Gupta 2017) through IMP's densities down to the sparsest ticket, keeping the mask it
had at each ticket's density; levels 2, 3, ... train one ticket each in full from the rewind
point."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lth.api.search.base import (
    SEARCH_LEVEL,
    Dense,
    LevelPlan,
    Method,
    PruneSchedule,
    SnapshotOf,
    first_level,
)

if TYPE_CHECKING:
    from lth.api.pruning import PruningSpec
    from lth.api.spec import RunSpec


class Gradual(Method):
    name = "gradual"
    words = (
        "one run of N epochs that prunes as it trains, then one full training per ticket "
        "from the rewind point"
    )

    def search_levels(self, pruning: PruningSpec) -> int:
        return 1

    def level_density(self, pruning: PruningSpec, level: int) -> float:
        densities = pruning.ticket_densities()
        if level == 0:
            return 1.0
        if level == SEARCH_LEVEL:
            return densities[-1]
        return densities[min(level - SEARCH_LEVEL, len(densities)) - 1]

    def level_plan(self, spec: RunSpec, level: int) -> LevelPlan:
        if level == 0:
            return first_level(spec)
        search = spec.pruning.search
        if level == SEARCH_LEVEL:
            tickets = [(d, SEARCH_LEVEL + 1 + i) for i, d in enumerate(spec.pruning.ticket_densities())]
            prunes = PruneSchedule(tuple(spec.pruning.search_densities()), tuple(tickets))
            if search.start == "trained":
                return LevelPlan(Dense(), "trained", "last-epochs", search.epochs, prunes, search=True)
            return LevelPlan(Dense(), "rewind", "rewind", search.epochs, prunes, search=True)
        return LevelPlan(SnapshotOf(SEARCH_LEVEL, level), "rewind", "rewind")
