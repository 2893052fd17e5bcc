"""The gradual search through the planner, cost accounting, and its spec checks."""

from __future__ import annotations

from typing import Any

import pytest

from lth.api import RunSpec
from lth.api.validation import check_spec, parse_spec
from lth.plan import cost, plan
from tests.plan.test_planner import T0, Cluster, drive, make_spec

GRADUAL = {"levels": None, "search": {"method": "gradual", "densities": [0.21, 0.055], "epochs": 2}}


def gradual_spec(**pruning: Any) -> dict[str, Any]:
    spec = make_spec(pruning={**GRADUAL, "controls": {"branches": ["random-reinit", "random-prune"]}})
    spec["pruning"].pop("levels")
    spec["pruning"].update(pruning)
    return spec


def test_gradual_runs_dense_search_then_one_full_level_per_ticket_with_controls_at_tickets() -> None:
    result, world, _ = drive(
        gradual_spec(), Cluster(top1=lambda level, branch: 95.0 if branch == "main" else 90.0)
    )
    assert world.trained == [
        "run-prep", "run-level-00", "run-level-01", "run-level-02", "run-level-03",
        "run-level-02-reinit", "run-level-02-rprune", "run-level-03-reinit", "run-level-03-rprune",
    ]  # fmt: skip
    status = result.status
    assert status.phase == "Succeeded"
    main = [(e.level, e.density) for e in status.levels if e.branch == "main"]
    assert main == [(0, 1.0), (1, 0.055), (2, 0.21), (3, 0.055)]
    assert status.best is not None and status.best.level == 3  # a ticket level, not the search
    # 10 epochs, rewind to 1ep: dense 1, search 2/10, each ticket (and control) 9/10
    assert status.cost is not None
    assert status.cost.search == pytest.approx(1 + 0.2 + 0.9 + 0.9)
    assert status.cost.controls == pytest.approx(4 * 0.9)
    assert status.cost.ticket == pytest.approx(1 + 0.2 + 0.9)


def test_the_search_level_is_never_the_best_ticket() -> None:
    top1 = {0: 95.0, 1: 95.0, 2: 95.0, 3: 80.0}
    result, _, _ = drive(gradual_spec(), Cluster(top1=lambda level, branch: top1[level]))
    assert result.status.best is not None and result.status.best.level == 2


def test_imp_costs_one_dense_run_per_level_less_the_rewind_point() -> None:
    result, _, _ = drive(make_spec(pruning={"levels": 3, "rewindTo": "0"}))
    assert result.status.cost is not None
    assert result.status.cost.search == pytest.approx(4.0) and result.status.cost.controls == 0
    assert result.status.cost.ticket == pytest.approx(4.0)  # the best: level 3, after levels 0-2
    spec = RunSpec.model_validate(make_spec(pruning={"levels": 13, "rewindTo": "1ep"}))
    assert sum(cost.job_cost(spec, level, "main") for level in range(14)) == pytest.approx(1 + 13 * 0.9)


def test_the_trainers_count_of_epochs_is_the_cost_when_it_has_one() -> None:
    spec = RunSpec.model_validate(make_spec())
    from lth.api import LevelResult

    result = LevelResult(level=1, density=0.8, top1=70.0, trained_epochs=7.5)
    assert cost.job_cost(spec, 1, "main", result) == 0.75


def test_cost_is_in_the_status_while_the_run_goes() -> None:
    spec = gradual_spec()
    first = plan(
        "run", 1, parse_spec({**spec, "dataset": {"format": "prepared", "path": "data"}}), None, {}, T0
    )
    assert first.status.cost is not None and first.status.cost.search == 0


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"rewind": "learning-rate"}, "spec.pruning.search.method"),
        ({"levels": 13}, "spec.pruning.levels"),
        ({"stop": {"targetDensity": 0.1}}, "spec.pruning.stop.targetDensity"),
        ({"search": {"method": "gradual", "epochs": 11}}, "spec.pruning.search.epochs"),
        ({"search": {"densities": [0.2]}}, "spec.pruning.search.densities"),
    ],
)
def test_spec_problems_of_the_search_name_the_field(change: dict[str, Any], path: str) -> None:
    spec = RunSpec.model_validate(gradual_spec(**change))
    assert path in [p.path for p in check_spec(spec)]


def test_densities_must_decrease() -> None:
    _, problems = parse_spec(gradual_spec(search={"method": "gradual", "densities": [0.1, 0.2]}))
    assert any("densities" in p.path for p in problems)


def test_a_transfer_run_cannot_search() -> None:
    spec = gradual_spec()
    spec["ticket"] = {"path": "tickets/t"}
    assert "spec.pruning.search.method" in [p.path for p in check_spec(RunSpec.model_validate(spec))]


def test_gradual_without_densities_aims_at_the_density_of_the_level_budget() -> None:
    spec = RunSpec.model_validate(make_spec(pruning={"levels": 13, "search": {"method": "gradual"}}))
    assert spec.pruning.ticket_densities() == [pytest.approx(0.8**13)] and spec.level_budget == 2


def test_a_gradual_run_resumes_from_every_state_without_creating_a_child_twice() -> None:
    """An executor killed at any point and started again replays the plan from what it finds."""
    spec = gradual_spec(controls={"branches": ["random-reinit"]})
    spec["retry"] = {"training": {"backoffLimit": 1}}
    _, _, seen = drive(spec, Cluster(fail={"run-level-01": 1}))
    for index, (status, children) in enumerate(seen):
        for replayed in (status, seen[index - 1][0] if index else None):
            result = plan("run", 1, parse_spec(spec), replayed, children, T0)
            created = [a.name for a in result.creates]
            assert not set(created) & set(children), (index, created)


def test_short_imp_runs_short_search_levels_then_the_tickets_and_counts_each_tickets_path() -> None:
    search = {"method": "short-imp", "densities": [0.21, 0.055], "epochs": 2}
    spec = gradual_spec(fraction=0.4, search=search)
    result, _, _ = drive(spec, Cluster(top1=lambda level, branch: 95.0 if branch == "main" else 90.0))
    status = result.status
    main = [(e.level, e.density) for e in status.levels if e.branch == "main"]
    # the search: 60 %, 36 %, 21 %, 13 %, 7.8 % (5.5 % is pruned from 7.8 % for its ticket)
    assert main == [
        (0, 1.0),
        (1, 0.6),
        (2, 0.36),
        (3, 0.21),
        (4, 0.1296),
        (5, 0.07776),
        (6, 0.21),
        (7, 0.055),
    ]
    assert not any(e.branch != "main" and e.level <= 5 for e in status.levels)
    assert status.best is not None and status.best.level == 7
    assert status.cost is not None
    # 10 epochs, rewind to 1ep: dense 1, each search level 2/10, each ticket 9/10
    assert status.cost.search == pytest.approx(1 + 5 * 0.2 + 2 * 0.9)
    assert status.cost.ticket == pytest.approx(1 + 5 * 0.2 + 0.9)
    spec_model = RunSpec.model_validate(spec)
    assert cost.ticket_levels(spec_model, 6) == [0, 1, 2, 6]  # 21 %: pruned from level 2's weights
