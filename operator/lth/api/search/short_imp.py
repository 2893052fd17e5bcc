"""method short-imp: IMP with large steps and short retraining: levels 1 to S train only
search.epochs epochs from the rewind point, each with the mask pruned from the level before
down to the next of the search's densities (IMP's at spec.pruning.fraction, and
search.densities); then one level per ticket trains its mask in full from the rewind point."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lth.api.search.base import LevelPlan, MaskOf, Method, PrunedFrom, first_level

if TYPE_CHECKING:
    from lth.api.pruning import PruningSpec
    from lth.api.spec import RunSpec


class ShortImp(Method):
    name = "short-imp"
    words = "short levels of N epochs each, then one full training per ticket from the rewind point"

    def search_levels(self, pruning: PruningSpec) -> int:
        """One per density of the search but the last: its mask is pruned from the last one's weights."""
        return len(pruning.search_densities()) - 1

    def level_density(self, pruning: PruningSpec, level: int) -> float:
        if level == 0:
            return 1.0
        searched = self.search_levels(pruning)
        if level <= searched:
            return pruning.search_densities()[level - 1]
        densities = pruning.ticket_densities()
        return densities[min(level - searched, len(densities)) - 1]

    def level_plan(self, spec: RunSpec, level: int) -> LevelPlan:
        if level == 0:
            return first_level(spec)
        pruning = spec.pruning
        density = self.level_density(pruning, level)
        if not self.is_ticket_level(pruning, level):  # a short search level
            return LevelPlan(
                PrunedFrom(level - 1, density), "rewind", "rewind", pruning.search.epochs, search=True
            )
        # The ticket's mask: the search level's of the same density, or (the sparsest ticket)
        # the one pruned from the last search level's final weights.
        step = pruning.search_densities().index(density) + 1
        last = self.search_levels(pruning)
        mask = MaskOf(step) if step <= last else PrunedFrom(last, density)
        return LevelPlan(mask, "rewind", "rewind")
