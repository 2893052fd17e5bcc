"""The search methods' registry (lth.api.search): each method's level plans, and what follows
from them alone (the cost of a level, the levels a ticket took), read alike by the planner and
the trainer."""

from __future__ import annotations

from typing import Any

import pytest

from lth.api import RunSpec
from lth.api.search import METHODS, base
from lth.api.search.base import Dense, LevelPlan, MaskOf, PrunedFrom, SnapshotOf, Transferred
from lth.plan import cost
from tests.plan.test_planner import drive, make_spec


def spec_of(**pruning: Any) -> RunSpec:
    spec = make_spec(pruning=pruning)
    return RunSpec.model_validate(spec)


def gradual(**search: Any) -> RunSpec:
    return spec_of(
        levels=None, search={"method": "gradual", "densities": [0.21, 0.055], "epochs": 2, **search}
    )


def short_imp() -> RunSpec:
    return spec_of(levels=None, search={"method": "short-imp", "densities": [0.36, 0.21, 0.055], "epochs": 2})


def test_imp_prunes_each_level_from_the_one_before_and_rewinds() -> None:
    spec = spec_of(levels=4)
    plans = [spec.pruning.method.level_plan(spec, level) for level in range(5)]
    assert plans[0] == LevelPlan(Dense(), "init", "zero")
    assert plans[1:] == [LevelPlan(PrunedFrom(level), "rewind", "rewind") for level in range(4)]
    assert [cost.ticket_levels(spec, level) for level in (0, 3)] == [[0], [0, 1, 2, 3]]
    assert [cost.planned_epochs(spec, level) for level in (0, 1)] == [10.0, 9.0]  # rewind to 1ep of 10


def test_a_transfer_run_starts_from_its_ticket() -> None:
    spec = RunSpec.model_validate(make_spec(ticket={"path": "tickets/t"}, pruning={"levels": 1}))
    assert spec.pruning.method.level_plan(spec, 0).mask == Transferred()
    assert cost.ticket_levels(spec, 1) == [0, 1]


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ("trained", LevelPlan(Dense(), "trained", "last-epochs", 2, search=True)),
        ("rewind", LevelPlan(Dense(), "rewind", "rewind", 2, search=True)),
    ],
)
def test_the_gradual_search_prunes_while_it_trains_and_its_tickets_take_its_snapshots(
    start: str, expected: LevelPlan
) -> None:
    spec = gradual(start=start)
    search = spec.pruning.method.level_plan(spec, 1)
    assert search.prunes is not None and search == LevelPlan(**{**expected.__dict__, "prunes": search.prunes})
    assert search.prunes.densities[-1] == 0.055 and dict(search.prunes.tickets) == {0.21: 2, 0.055: 3}
    assert spec.pruning.method.level_plan(spec, 3) == LevelPlan(SnapshotOf(1, 3), "rewind", "rewind")
    assert cost.ticket_levels(spec, 3) == [0, 1, 3]  # the dense run, the search, its own training
    assert cost.planned_epochs(spec, 1) == 2.0 and cost.planned_epochs(spec, 2) == 9.0


def test_short_imp_tickets_reuse_a_search_levels_mask_or_prune_the_last_one() -> None:
    spec = short_imp()
    method = spec.pruning.method
    searched = method.search_levels(spec.pruning)
    densities = spec.pruning.search_densities()
    assert searched == len(densities) - 1
    assert method.level_plan(spec, 1) == LevelPlan(
        PrunedFrom(0, densities[0]), "rewind", "rewind", 2, search=True
    )
    first_ticket = method.level_plan(spec, searched + 1)  # density 0.36: a search level's mask
    step = densities.index(0.36) + 1
    assert first_ticket.mask == MaskOf(step)
    assert cost.ticket_levels(spec, searched + 1) == [*range(step), searched + 1]
    last = method.level_plan(spec, searched + 3)  # 0.055, the sparsest: pruned from the last search level
    assert last.mask == PrunedFrom(searched, 0.055)
    assert cost.ticket_levels(spec, searched + 3) == [*range(searched + 1), searched + 3]


class OneShot(base.Method):
    """A method the registry did not have: level 1 prunes the dense network to 10 % at once."""

    name = "imp"
    words = "one shot"

    def search_levels(self, pruning: Any) -> int:
        return 0

    def level_density(self, pruning: Any, level: int) -> float:
        return 1.0 if level == 0 else 0.1

    def level_budget(self, spec: RunSpec) -> int:
        return 1

    def level_plan(self, spec: RunSpec, level: int) -> LevelPlan:
        if level == 0:
            return base.first_level(spec)
        return LevelPlan(PrunedFrom(0, 0.1), "rewind", "rewind")


def test_the_planner_runs_whatever_levels_the_registry_entry_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METHODS, "imp", OneShot())
    result, world, _ = drive(make_spec(pruning={"levels": None}))
    assert world.trained == ["run-prep", "run-level-00", "run-level-01"]
    assert [(e.level, e.density) for e in result.status.levels] == [(0, 1.0), (1, 0.1)]
