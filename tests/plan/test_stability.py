"""rewindTo auto in the planner: the ladder searched by bisection on scripted instabilities, the
analysis as children between level 0 and level 1 (maxParallelJobs at a time, retried, resumed
from every state), the choice and what it cost."""

from __future__ import annotations

from typing import Any

import pytest

from lth.api.observed import ObservedChild
from lth.api.validation import parse_spec
from lth.plan import CreateLevelJob, CreateStabilityJob, plan
from lth.plan.stability import bounds, next_point
from tests.plan.test_planner import T0, Cluster, drive, make_spec

LADDER = [0.0, 0.25, 0.5, 1.0, 2.0]
"""The default ladder of a 10-epoch schedule: 0, then 0.25 doubling up to a quarter of it."""
FALLING = {0: 30.0, 1: 12.0, 2: 5.0, 3: 1.5, 4: 0.5}
"""Instability falls as k grows; stable (at most 2 points) from k = 1 epoch (point 3)."""


def auto_spec(pruning: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    auto = {"rewindTo": "auto", "levels": 2, **(pruning or {})}
    return make_spec(dataset={"format": "prepared"}, pruning=auto, **sections)


def measured_order(world: Cluster) -> list[int]:
    """The ladder points in the order their copies were created."""
    points = [int(name.split("-")[2]) for name in world.created if name.endswith("-a")]
    return points


@pytest.mark.parametrize(
    ("stable", "expected"),
    [
        ({}, 2),  # nothing known: the middle of five
        ({2: False}, 4),  # past 2: bisect 3..4
        ({2: False, 4: True}, 3),
        ({2: False, 4: True, 3: True}, None),  # 3 is the earliest stable: done
        ({2: True, 1: True, 0: True}, None),  # stable from the start
        ({2: False, 3: False, 4: False}, None),  # none stable: done too
    ],
)
def test_bisection_picks_the_next_point_from_what_is_measured(
    stable: dict[int, bool], expected: int | None
) -> None:
    assert next_point(5, stable) == expected


def test_a_stable_point_below_an_unstable_one_still_ends_the_search() -> None:
    """Noise can break the order instability falls in: the search ends rather than loops."""
    assert bounds(5, {1: True, 3: False}) == (4, 1)
    assert next_point(5, {1: True, 3: False}) is None


def test_the_earliest_stable_point_is_found_in_three_measurements_and_levels_rewind_to_it() -> None:
    result, world, _ = drive(auto_spec(), Cluster(instability=FALLING.__getitem__))
    assert measured_order(world) == [2, 4, 3]
    stability = result.status.stability
    assert stability is not None and stability.ladder == LADDER
    assert [(m.point, m.instability, m.stable) for m in stability.points] == [
        (2, 5.0, False),
        (3, 1.5, True),
        (4, 0.5, True),
    ]
    chosen = stability.chosen
    assert chosen is not None and (chosen.point, chosen.rewind_to, chosen.step) == (3, "1ep", 4)
    # The analysis sits between level 0 and level 1: its jobs all before level 1.
    first_level_1 = world.created.index("run-level-01")
    assert all(world.created.index(n) < first_level_1 for n in world.created if "-stability-" in n)
    assert world.created.index("run-level-00") < world.created.index("run-stability-02-a")
    reasons = [e.reason for e in world.events]
    assert reasons.count("StabilityMeasured") == 3 and "RewindChosen" in reasons
    assert result.status.phase == "Succeeded"


def test_the_analysis_costs_its_copies_and_the_ticket_includes_it() -> None:
    result, _, _ = drive(auto_spec(), Cluster(instability=FALLING.__getitem__))
    stability, cost = result.status.stability, result.status.cost
    assert stability is not None and cost is not None
    # Copies of k = 0.5, 2, 1 epochs, two each, train 10 - k of 10 epochs; the paths train nothing.
    expected = 2 * ((10 - 0.5) + (10 - 2) + (10 - 1)) / 10
    assert stability.cost == pytest.approx(expected) and cost.stability == pytest.approx(expected)
    assert [m.cost for m in stability.points] == [pytest.approx(1.9), pytest.approx(1.8), pytest.approx(1.6)]
    best = result.status.best
    assert best is not None and best.level == 2
    assert cost.ticket == pytest.approx(cost.search + expected)


def test_stable_from_the_start_rewinds_to_zero() -> None:
    result, world, _ = drive(auto_spec(), Cluster(instability=lambda point: 0.5))
    assert measured_order(world) == [2, 1, 0]
    chosen = result.status.stability.chosen  # type: ignore[union-attr]
    assert chosen is not None and (chosen.rewind_to, chosen.reason) == (
        "0",
        "the earliest stable point of the ladder",
    )


def test_no_stable_point_takes_the_least_unstable_and_warns() -> None:
    result, world, _ = drive(auto_spec(), Cluster(instability=lambda point: 10.0 - point))
    assert measured_order(world) == [2, 4]  # 4 unstable: 3, before it, is taken to be too
    chosen = result.status.stability.chosen  # type: ignore[union-attr]
    assert chosen is not None and chosen.point == 4 and "no point of the ladder" in chosen.reason
    warning = next(e for e in world.events if e.reason == "NoStablePoint")
    assert warning.type == "Warning" and "2ep" in warning.message


def passes(spec: dict[str, Any], world: Cluster) -> list[list[str]]:
    """The children each planning pass created, every child finishing between passes."""
    created: list[list[str]] = []
    status = None
    for _ in range(200):
        result = plan("run", 1, parse_spec(spec), status, world.children, T0)
        world.apply(result)
        created.append([a.name for a in result.creates])
        status = result.status
        if result.done:
            return created
        world.finish_all(result)
    raise AssertionError("the run did not finish")


def test_given_points_threshold_and_the_copies_one_slot_at_a_time() -> None:
    spec = auto_spec({"stability": {"points": [0, 3], "threshold": 5}})
    world = Cluster(instability=lambda point: 4.0)
    created = passes(spec, world)
    assert measured_order(world) == [1, 0]  # both stable under 5: bisect down to 0
    # maxParallelJobs 1 (the default): one job at a time, the copies one after the other.
    assert all(len(names) <= 1 for names in created)
    assert ["run-stability-01-a"] in created and ["run-stability-01-b"] in created


def test_both_copies_run_at_once_with_two_slots() -> None:
    spec = auto_spec(resources={"maxParallelJobs": 2})
    created = passes(spec, Cluster(instability=FALLING.__getitem__))
    assert ["run-stability-02-a", "run-stability-02-b"] in created
    assert ["run-stability-02-path"] in created  # once both copies are done


def test_levels_wait_for_the_choice_and_are_told_the_point() -> None:
    spec = auto_spec()
    world = Cluster(instability=FALLING.__getitem__)
    _, _, seen = drive(spec, world)
    for status, _children in seen:
        if status is not None and status.level_entry(1) is not None:
            assert status.stability is not None and status.stability.chosen is not None


def test_resume_mid_analysis_from_every_state_never_creates_a_job_twice() -> None:
    """Replay each state with its status, and with the status of one write earlier (a lost write)."""
    spec = auto_spec(retry={"training": {"backoffLimit": 1}})
    _, _, seen = drive(spec, Cluster(instability=FALLING.__getitem__, fail={"run-stability-04-b": 1}))
    for index, (status, children) in enumerate(seen):
        for replayed in (status, seen[index - 1][0] if index else None):
            result = plan("run", 1, parse_spec(spec), replayed, children, T0)
            created = [a.name for a in result.creates]
            assert not set(created) & set(children), (index, created)
            again = plan(
                "run",
                1,
                parse_spec(spec),
                result.status,
                {**children, **{n: ObservedChild(n, 1, "Running") for n in created}},
                T0,
            )
            assert set(a.name for a in again.creates).isdisjoint(created)


def test_a_failed_copy_is_retried_and_one_failing_for_good_fails_the_run() -> None:
    spec = auto_spec(retry={"training": {"backoffLimit": 1}})
    result, world, _ = drive(spec, Cluster(instability=FALLING.__getitem__, fail={"run-stability-02-a": 1}))
    assert result.status.phase == "Succeeded" and world.created.count("run-stability-02-a") == 2
    result, world, _ = drive(spec, Cluster(instability=FALLING.__getitem__, fail={"run-stability-02-a": 9}))
    failed = result.status.condition("Failed")
    assert result.status.phase == "Failed" and failed is not None and failed.reason == "StabilityFailed"
    assert "run-stability-02-a" in failed.message and "run-level-01" not in world.created


def test_the_progress_column_and_message_say_what_the_analysis_measures() -> None:
    spec = auto_spec()
    _, _, seen = drive(spec, Cluster(instability=FALLING.__getitem__))
    during = [s for s, _ in seen if s is not None and s.stability is not None and s.stability.chosen is None]
    assert during and any(s.progress == "k 0.5ep" for s in during)
    progressing = during[-1].condition("Progressing")
    assert progressing is not None and progressing.message.startswith("instability analysis (rewindTo auto)")


def test_the_planner_creates_the_analysis_jobs_with_their_point_and_part() -> None:
    spec = auto_spec()
    world = Cluster(instability=FALLING.__getitem__)
    creates: list[Any] = []
    status = None
    for step in range(40):
        result = plan("run", 1, parse_spec(spec), status, world.children, T0)
        creates += [a for a in result.creates if isinstance(a, CreateStabilityJob | CreateLevelJob)]
        world.apply(result)
        status = result.status
        world.finish_all(result)
        if step > 30:
            break
    jobs = [(a.point, a.part) for a in creates if isinstance(a, CreateStabilityJob)]
    assert jobs[:3] == [(2, "a"), (2, "b"), (2, "path")]
