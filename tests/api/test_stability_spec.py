"""spec.pruning.rewindTo auto and spec.pruning.stability: the ladder, and what validation refuses."""

from __future__ import annotations

from typing import Any

import pytest

from lth.api import PruningSpec, RunSpec, StabilitySpec
from lth.api.pruning import instability
from lth.api.validation import check_name, check_spec


def spec(pruning: dict[str, Any], **sections: Any) -> RunSpec:
    training = {"epochs": 10, "milestones": [5], "warmupEpochs": 1, **sections.pop("training", {})}
    return RunSpec.model_validate(
        {"dataset": {"path": "x"}, "training": training, "pruning": pruning, **sections}
    )


def problems(run: RunSpec) -> list[str]:
    return [str(p) for p in check_spec(run)]


def test_the_default_ladder_doubles_from_a_quarter_epoch_to_a_quarter_of_the_schedule() -> None:
    assert StabilitySpec().ladder(10) == [0, 0.25, 0.5, 1, 2]
    assert StabilitySpec().ladder(90) == [0, 0.25, 0.5, 1, 2, 4, 8, 16]
    assert StabilitySpec(max_epochs=1).ladder(90) == [0, 0.25, 0.5, 1]
    assert StabilitySpec(points=[0, 3]).ladder(90) == [0, 3]


def test_fractional_epochs_are_a_rewind_point_too() -> None:
    assert PruningSpec(rewind_to="0.5ep").rewind_point() == (0.5, "ep")
    assert PruningSpec(rewind_to="auto").auto_rewind


def test_the_barrier_is_the_largest_error_above_the_mean_of_the_ends() -> None:
    assert instability([5.0, 5.0, 5.0]) == 0.0
    assert instability([4.0, 30.0, 6.0]) == 25.0


def test_auto_is_accepted_with_weight_rewinding_and_levels_to_rewind() -> None:
    assert problems(spec({"rewindTo": "auto", "levels": 3})) == []


@pytest.mark.parametrize(
    ("pruning", "expected"),
    [
        (
            {"rewindTo": "auto", "rewind": "learning-rate"},
            "spec.pruning.rewindTo: auto measures the stability",
        ),
        (
            {"rewindTo": "auto", "levels": 0},
            "spec.pruning.rewindTo: auto chooses where pruned levels rewind to",
        ),
        ({"rewindTo": "6ep", "stability": {"threshold": 1}}, "spec.pruning.stability: applies to"),
        ({"rewindTo": "auto", "stability": {"points": [0, 10]}}, "spec.pruning.stability.points: the last"),
        (
            {"rewindTo": "auto", "stability": {"horizonEpochs": 12}},
            "spec.pruning.stability.horizonEpochs: 12",
        ),
        (
            {"rewindTo": "auto", "stability": {"points": [0], "maxEpochs": 2}},
            "spec.pruning.stability.maxEpochs",
        ),
    ],
)
def test_what_auto_needs_is_refused_naming_the_field(pruning: dict[str, Any], expected: str) -> None:
    found = problems(spec(pruning))
    assert any(p.startswith(expected) for p in found), found


def test_points_must_increase() -> None:
    with pytest.raises(ValueError, match="points must be strictly increasing"):
        StabilitySpec(points=[1, 0.5])


def test_the_analysis_job_names_bound_the_run_s_name() -> None:
    """`<run>-stability-04-path-master-0` is the longest name an auto run derives."""
    run = spec({"rewindTo": "auto", "levels": 3})
    name = "a" * 37
    found = check_name(name, run)
    assert found and "stability-04-path-master-0" in found[0].message
    assert check_name("a" * 36, run) == []
