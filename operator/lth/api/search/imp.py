"""method imp: plain IMP, one full training per level; level L prunes level L-1's final
weights by spec.pruning.fraction and trains from the rewind point (Frankle & Carbin; Renda
et al. for learning-rate rewinding)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lth.api.search.base import LevelPlan, Method, PrunedFrom, first_level

if TYPE_CHECKING:
    from lth.api.pruning import PruningSpec
    from lth.api.spec import RunSpec


class Imp(Method):
    name = "imp"
    words = "one full training per level"
    searches = False

    def search_levels(self, pruning: PruningSpec) -> int:
        return 0

    def level_density(self, pruning: PruningSpec, level: int) -> float:
        return pruning.density(level)

    def level_budget(self, spec: RunSpec) -> int:
        """spec.pruning.levels, else 10 (a search) or 0 (a transfer run trains its ticket once)."""
        if spec.pruning.levels is not None:
            return spec.pruning.levels
        return 0 if spec.ticket is not None else 10

    def level_plan(self, spec: RunSpec, level: int) -> LevelPlan:
        if level == 0:
            return first_level(spec)
        return LevelPlan(PrunedFrom(level - 1), "rewind", "rewind")
