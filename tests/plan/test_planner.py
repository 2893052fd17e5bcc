"""The planner: every transition, resume from every state, retries, stop rules."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lth.api import EpochProgress, LevelResult, RunStatus, StabilityResult
from lth.api.observed import ObservedChild, ObservedSource, Stuck
from lth.api.validation import parse_spec
from lth.plan import (
    CreateExport,
    CreateLevelJob,
    CreatePreprocessing,
    CreateStabilityJob,
    DeleteChild,
    EmitEvent,
    Plan,
    plan,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_spec(**sections: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "dataset": {"path": "imagenet"},
        "training": {"epochs": 10, "milestones": [5], "warmupEpochs": 1},
        "pruning": {"levels": 3, "rewindTo": "1ep"},
    }
    for section, values in sections.items():
        spec.setdefault(section, {}).update(values)
    return spec


def top1_flat(level: int, branch: str) -> float:
    return 76.0 if branch == "main" else 60.0


@dataclass
class Cluster:
    """A fake world for the planner: children and how each attempt of each ends."""

    top1: Any = top1_flat
    instability: Any = lambda point: 0.0
    """ladder point -> the instability its path reports (rewindTo auto)"""
    fail: dict[str, int] = field(default_factory=dict)
    """name -> number of attempts that fail before one succeeds"""
    children: dict[str, ObservedChild] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    deleted_kinds: list[str] = field(default_factory=list)
    events: list[EmitEvent] = field(default_factory=list)

    @property
    def trained(self) -> list[str]:
        """What was created before the run ended: all but its export Job."""
        return [name for name in self.created if name != "run-export"]

    def apply(self, result: Plan) -> None:
        for action in result.actions:
            if isinstance(action, CreatePreprocessing | CreateLevelJob | CreateStabilityJob | CreateExport):
                assert action.name not in self.children, f"{action.name} created twice"
                self.created.append(action.name)
                self.children[action.name] = ObservedChild(action.name, action.attempt, "Running")
            elif isinstance(action, DeleteChild):
                self.deleted.append(action.name)
                self.deleted_kinds.append(action.kind)
                del self.children[action.name]
            elif isinstance(action, EmitEvent):
                self.events.append(action)

    def finish_all(self, result: Plan) -> None:
        """Every running child reaches its terminal state."""
        for name, child in list(self.children.items()):
            if child.state != "Running":
                continue
            if child.attempt <= self.fail.get(name, 0):
                self.children[name] = ObservedChild(name, child.attempt, "Failed", "OOMKilled")
                continue
            result_row: LevelResult | StabilityResult | None = None
            if "-stability-" in name:
                result_row = self.stability_result(result, name)
            elif "-level-" in name:
                row = next(e for e in result.status.levels if e.name == name)
                result_row = LevelResult(
                    level=row.level,
                    branch=row.branch,
                    density=row.density or 1.0,
                    top1=self.top1(row.level, row.branch),
                    top5=90.0,
                    loss=1.0,
                    duration_seconds=60.0,
                )
            self.children[name] = ObservedChild(name, child.attempt, "Succeeded", result=result_row)

    def stability_result(self, result: Plan, name: str) -> StabilityResult:
        """A copy trains 10 - k epochs of 10 at 4 steps an epoch; the path reports the scripted
        instability above endpoints of 5 % error."""
        assert result.status.stability is not None
        job = next(j for j in result.status.stability.jobs if j.name == name)
        epochs = result.status.stability.ladder[job.point]
        if job.part != "path":
            trained = 10 - epochs
            return StabilityResult(
                point=job.point, part=job.part, epochs=epochs, step=round(4 * epochs), top1=95.0,
                trained_epochs=trained,
            )  # fmt: skip
        barrier = self.instability(job.point)
        errors = [5.0, 5.0 + barrier / 2, 5.0 + barrier, 5.0 + barrier / 2, 5.0]
        return StabilityResult(
            point=job.point, part="path", epochs=epochs, step=round(4 * epochs), errors=errors,
            instability=barrier,
        )  # fmt: skip


def drive(
    spec: dict[str, Any],
    cluster: Cluster | None = None,
    max_steps: int = 200,
    name: str = "run",
    source: ObservedSource | None = None,
) -> tuple[Plan, Cluster, list[tuple[RunStatus | None, dict[str, ObservedChild]]]]:
    """Plan, act, let children finish, repeat: returns the last plan and every state seen.
    `source` is what the executor finds where spec.ticket points (shown to the first plan only:
    the ticket is resolved once)."""
    world = cluster or Cluster()
    status: RunStatus | None = None
    seen: list[tuple[RunStatus | None, dict[str, ObservedChild]]] = []
    for step in range(max_steps):
        now = T0 + timedelta(minutes=step)
        seen.append((copy.deepcopy(status), dict(world.children)))
        result = plan(name, 1, parse_spec(spec), status, world.children, now, source if step == 0 else None)
        world.apply(result)
        status = result.status
        if result.done:
            return result, world, seen
        world.finish_all(result)
    raise AssertionError("the run did not finish")


def test_happy_path_preprocesses_then_runs_every_level_once() -> None:
    result, world, _ = drive(make_spec())
    assert world.created == [
        "run-prep",
        "run-level-00",
        "run-level-01",
        "run-level-02",
        "run-level-03",
        "run-export",
    ]
    status = result.status
    assert status.phase == "Succeeded"
    assert [(e.level, e.density) for e in status.levels] == [(0, 1.0), (1, 0.8), (2, 0.64), (3, 0.512)]
    assert status.level == 3 and status.density == 0.512 and status.top1 == 76.0
    assert status.dense_top1 == 76.0
    assert status.best is not None and (status.best.level, status.best.summary) == (3, "L3 51.2% 76.0%")
    assert status.condition("Succeeded").status == "True"  # type: ignore[union-attr]
    assert status.condition("Progressing").status == "False"  # type: ignore[union-attr]
    assert all(e.phase == "Succeeded" and e.duration_seconds == 60.0 for e in status.levels)


def test_phases_move_pending_preprocessing_training_succeeded() -> None:
    world = Cluster()
    spec = make_spec(pruning={"levels": 1})
    first = plan("run", 1, parse_spec(spec), None, {}, T0)
    assert first.status.phase == "Preprocessing"
    assert [type(a) for a in first.actions if not isinstance(a, EmitEvent)] == [CreatePreprocessing]
    world.apply(first)
    world.finish_all(first)
    second = plan("run", 1, parse_spec(spec), first.status, world.children, T0)
    assert second.status.phase == "Training" and second.status.preprocessing.phase == "Succeeded"  # type: ignore[union-attr]
    assert [a.name for a in second.creates] == ["run-level-00"]
    reasons = [e.reason for e in second.actions if isinstance(e, EmitEvent)]
    assert "Training" in reasons and "Created" in reasons


def test_prepared_data_skips_preprocessing() -> None:
    result, world, _ = drive(make_spec(dataset={"format": "prepared", "path": "old-run/data"}))
    assert world.trained[0] == "run-level-00" and "run-prep" not in world.trained
    assert result.status.preprocessing is None and result.status.phase == "Succeeded"


def test_level_budget_bounds_the_levels() -> None:
    result, world, _ = drive(make_spec(pruning={"levels": 0}))
    assert world.trained == ["run-prep", "run-level-00"]
    assert result.status.phase == "Succeeded" and result.status.best is not None
    assert result.status.best.level == 0


def test_target_density_stops_at_the_first_level_at_or_below_it() -> None:
    result, world, _ = drive(make_spec(pruning={"levels": 10, "stop": {"targetDensity": 0.6}}))
    assert world.trained[-1] == "run-level-03"  # 0.8^2 = 0.64 > 0.6 >= 0.8^3 = 0.512
    assert result.status.level == 3


def test_accuracy_drop_stops_after_the_first_level_below_tolerance() -> None:
    scores = {0: 76.0, 1: 75.8, 2: 75.0, 3: 72.5, 4: 70.0}
    world = Cluster(top1=lambda level, branch: scores[level])
    result, world, _ = drive(make_spec(pruning={"levels": 4, "stop": {"maxTop1Drop": 3.0}}), world)
    assert world.trained[-1] == "run-level-03"  # 72.5 < 76 - 3: level 4 never runs
    best = result.status.best
    assert best is not None and best.level == 2  # 75.0 is within the 1.0-point match tolerance
    assert result.status.phase == "Succeeded"


def test_best_ticket_is_dense_when_nothing_matches() -> None:
    world = Cluster(top1=lambda level, branch: 76.0 if level == 0 else 50.0)
    result, _, _ = drive(make_spec(pruning={"levels": 2}), world)
    assert result.status.best is not None and result.status.best.level == 0


def test_failed_child_is_retried_then_succeeds() -> None:
    world = Cluster(fail={"run-level-01": 2})
    result, world, _ = drive(make_spec(retry={"training": {"backoffLimit": 2}}), world)
    assert result.status.phase == "Succeeded"
    assert world.trained.count("run-level-01") == 3 and world.deleted == ["run-level-01"] * 2
    row = result.status.level_entry(1)
    assert row is not None and row.attempts == 3
    assert [e.reason for e in world.events].count("Retrying") == 2


def test_child_failing_past_its_backoff_limit_fails_the_run_with_its_reason() -> None:
    world = Cluster(fail={"run-level-02": 9})
    result, world, _ = drive(make_spec(retry={"training": {"backoffLimit": 1}}), world)
    status = result.status
    assert status.phase == "Failed"
    failed = status.condition("Failed")
    assert failed is not None and failed.reason == "LevelFailed"
    assert (
        "run-level-02" in failed.message and "OOMKilled" in failed.message and "2 attempt" in failed.message
    )
    assert world.trained.count("run-level-02") == 2 and "run-level-03" not in world.trained


def test_preprocessing_failure_fails_the_run() -> None:
    world = Cluster(fail={"run-prep": 9})
    result, world, _ = drive(make_spec(retry={"preprocessing": {"backoffLimit": 0}}), world)
    failed = result.status.condition("Failed")
    assert failed is not None and failed.reason == "PreprocessingFailed"
    assert world.trained == ["run-prep"]


def test_child_deleted_by_hand_fails_the_run() -> None:
    spec = make_spec()
    world = Cluster()
    first = plan("run", 1, parse_spec(spec), None, {}, T0)
    world.apply(first)
    del world.children["run-prep"]
    second = plan("run", 1, parse_spec(spec), first.status, world.children, T0)
    failed = second.status.condition("Failed")
    assert second.status.phase == "Failed" and failed is not None and failed.reason == "ChildDeleted"
    assert "run-prep" in failed.message and second.creates == []


def test_succeeded_job_without_a_result_counts_as_a_failed_attempt() -> None:
    spec = make_spec(dataset={"format": "prepared"}, retry={"training": {"backoffLimit": 0}})
    first = plan("run", 1, parse_spec(spec), None, {}, T0)
    children = {"run-level-00": ObservedChild("run-level-00", 1, "Succeeded")}
    second = plan("run", 1, parse_spec(spec), first.status, children, T0)
    failed = second.status.condition("Failed")
    assert failed is not None and "without a result" in failed.message


def test_resume_from_every_state_never_creates_a_child_twice() -> None:
    """Replay each step with the status as it was, and as it was one write earlier."""
    spec = make_spec(
        pruning={"controls": {"branches": ["random-reinit"]}}, retry={"training": {"backoffLimit": 1}}
    )
    _, _, seen = drive(spec, Cluster(fail={"run-level-01": 1}))
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
            assert again.creates == [] or set(a.name for a in again.creates).isdisjoint(created)


def test_same_inputs_same_plan() -> None:
    spec = make_spec()
    _, _, seen = drive(spec)
    for status, children in seen:
        assert plan("run", 1, parse_spec(spec), status, children, T0) == plan(
            "run", 1, parse_spec(spec), status, children, T0
        )


def test_adopts_a_child_whose_creation_was_not_recorded() -> None:
    spec = make_spec(dataset={"format": "prepared"})
    children = {"run-level-00": ObservedChild("run-level-00", 1, "Running")}
    result = plan("run", 1, parse_spec(spec), None, children, T0)
    assert result.creates == []
    row = result.status.level_entry(0)
    assert row is not None and row.phase == "Running"


def test_invalid_spec_fails_with_a_condition_naming_the_field() -> None:
    spec = make_spec(pruning={"fraction": 1.5})
    result = plan("run", 1, parse_spec(spec), None, {}, T0)
    failed = result.status.condition("Failed")
    assert result.status.phase == "Failed" and failed is not None and failed.reason == "InvalidSpec"
    assert "spec.pruning.fraction" in failed.message
    assert result.creates == []


def test_name_too_long_for_child_names_is_an_invalid_spec() -> None:
    result = plan("r" * 60, 1, parse_spec(make_spec()), None, {}, T0)
    failed = result.status.condition("Failed")
    assert failed is not None and failed.reason == "InvalidSpec" and "metadata.name" in failed.message


def test_frozen_field_change_is_refused_and_the_run_goes_on_with_the_accepted_spec() -> None:
    spec = make_spec()
    world = Cluster()
    first = plan("run", 1, parse_spec(spec), None, {}, T0)
    world.apply(first)
    changed = make_spec(training={"epochs": 20}, pruning={"levels": 5})
    second = plan("run", 2, parse_spec(changed), first.status, world.children, T0)
    condition = second.status.condition("SpecAccepted")
    assert condition is not None and condition.status == "False" and condition.reason == "FrozenFieldChanged"
    assert "spec.training.epochs (10 -> 20)" in condition.message
    assert second.spec is not None and second.spec.training.epochs == 10  # frozen
    assert second.spec.pruning.levels == 5  # mutable: the level budget may grow mid-run
    assert second.status.observed_generation == 2
    assert [e.reason for e in second.actions if isinstance(e, EmitEvent)] == ["SpecRefused"]
    third = plan("run", 2, parse_spec(changed), second.status, world.children, T0)
    assert not [e for e in third.actions if isinstance(e, EmitEvent) and e.reason == "SpecRefused"]


def test_the_training_api_is_frozen_inside_the_mutable_resources() -> None:
    """A level's kind cannot change under a running run (its jobs would no longer be found);
    the rest of spec.resources may."""
    world = Cluster()
    first = plan("run", 1, parse_spec(make_spec(resources={"trainingApi": "PyTorchJob"})), None, {}, T0)
    world.apply(first)
    changed = make_spec(resources={"trainingApi": "TrainJob", "maxParallelJobs": 2})
    second = plan("run", 2, parse_spec(changed), first.status, world.children, T0)
    condition = second.status.condition("SpecAccepted")
    assert condition is not None and condition.reason == "FrozenFieldChanged"
    assert "spec.resources.trainingApi ('PyTorchJob' -> 'TrainJob')" in condition.message
    assert second.spec is not None and second.spec.resources.training_api == "PyTorchJob"
    assert second.spec.resources.max_parallel_jobs == 2


def test_a_trainjob_runs_levels_are_retried_and_stopped_as_trainjobs() -> None:
    spec = make_spec(
        pruning={"levels": 2, "controls": {"branches": ["random-reinit"]}},
        resources={"maxParallelJobs": 2, "trainingApi": "TrainJob"},
        retry={"training": {"backoffLimit": 1}},
    )
    world = Cluster(fail={"run-level-01": 9})
    result, world, _ = drive(spec, world)
    assert result.status.phase == "Failed"
    assert world.deleted[0] == "run-level-01"  # its failed attempt, before the retry
    assert world.deleted_kinds == ["TrainJob"] * len(world.deleted)  # never a JobSet: Trainer reruns it
    created = [e.message for e in world.events if e.reason == "Created"]
    assert "created TrainJob run-level-00 (level 0, main, density 1.0000)" in created


def test_mutable_change_extends_the_search() -> None:
    spec = make_spec(pruning={"levels": 1})
    _, world, seen = drive(spec)
    assert world.trained[-1] == "run-level-01"
    # While level 1 runs, the user raises the budget: level 2 follows it.
    status, children = next(
        (status, children) for status, children in reversed(seen) if status and status.phase == "Training"
    )
    finished = {n: ObservedChild(n, 1, "Succeeded", result=c.result) for n, c in children.items()}
    finished["run-level-01"] = ObservedChild(
        "run-level-01", 1, "Succeeded", result=LevelResult(level=1, density=0.8, top1=76.0)
    )
    grown = plan("run", 2, parse_spec(make_spec(pruning={"levels": 2})), status, finished, T0)
    assert grown.status.condition("SpecAccepted").status == "True"  # type: ignore[union-attr]
    assert [a.name for a in grown.creates] == ["run-level-02"]


def test_terminal_phase_never_flips_back() -> None:
    result, world, _ = drive(make_spec(pruning={"levels": 1}))
    broken = {n: ObservedChild(n, 1, "Failed", "gone") for n in world.children}
    again = plan("run", 1, parse_spec(make_spec(pruning={"levels": 1})), result.status, broken, T0)
    assert again.status == result.status and again.actions == []


def test_controls_run_after_the_main_chain_with_one_slot() -> None:
    spec = make_spec(pruning={"levels": 2, "controls": {"branches": ["random-reinit", "random-prune"]}})
    result, world, _ = drive(spec)
    assert world.trained == [
        "run-prep",
        "run-level-00",
        "run-level-01",
        "run-level-02",
        "run-level-01-reinit",
        "run-level-01-rprune",
        "run-level-02-reinit",
        "run-level-02-rprune",
    ]
    rows = {(e.level, e.branch): e for e in result.status.levels}
    assert rows[(2, "random-prune")].density == 0.64 and rows[(2, "random-prune")].top1 == 60.0
    assert result.status.best is not None and result.status.best.level == 2  # controls never count


def test_controls_run_beside_the_next_level_with_more_slots() -> None:
    spec = make_spec(
        pruning={"levels": 2, "controls": {"branches": ["random-reinit"], "levels": [1]}},
        resources={"maxParallelJobs": 2},
    )
    world = Cluster()
    status = None
    batches = []
    for _ in range(20):
        result = plan("run", 1, parse_spec(spec), status, world.children, T0)
        world.apply(result)
        batches.append(sorted(a.name for a in result.creates))
        status = result.status
        if result.done:
            break
        world.finish_all(result)
    assert ["run-level-01", "run-level-01-reinit"] in batches
    assert "run-level-02-reinit" not in world.trained


def test_run_failure_stops_running_children() -> None:
    spec = make_spec(
        pruning={"levels": 2, "controls": {"branches": ["random-reinit"]}},
        resources={"maxParallelJobs": 2},
        retry={"training": {"backoffLimit": 0}},
    )
    world = Cluster(fail={"run-level-01": 9})
    result, world, _ = drive(spec, world)
    assert result.status.phase == "Failed"
    assert "run-level-01-reinit" in world.deleted
    reinit = result.status.level_entry(1, "random-reinit")
    assert reinit is not None and reinit.phase == "Failed"


def test_condition_transition_time_only_moves_on_status_change() -> None:
    spec = make_spec()
    first = plan("run", 1, parse_spec(spec), None, {}, T0)
    later = T0 + timedelta(hours=1)
    world = Cluster()
    world.apply(first)
    second = plan("run", 1, parse_spec(spec), first.status, world.children, later)
    progressing = second.status.condition("Progressing")
    assert progressing is not None and progressing.last_transition_time == T0


@pytest.mark.parametrize("levels", [0, 1, 5, 13])
def test_density_rows_follow_one_minus_fraction_to_the_level(levels: int) -> None:
    result, _, _ = drive(make_spec(pruning={"levels": levels}))
    assert [e.density for e in result.status.levels] == [round(0.8**level, 6) for level in range(levels + 1)]


# --------------------------------------------------------------------------- transfer


def finished_search() -> RunStatus:
    """A search whose best ticket is level 2 (64% density): top-1 holds, then drops at level 3."""
    result, _, _ = drive(make_spec(), Cluster(top1=lambda level, branch: 76.0 - (5.0 if level == 3 else 0.0)))
    assert result.status.phase == "Succeeded" and result.status.best is not None
    assert result.status.best.level == 2
    return result.status


def transfer_spec(**ticket: Any) -> dict[str, Any]:
    spec = make_spec(ticket={"run": "search", **ticket}, dataset={"path": "places"})
    del spec["pruning"]["levels"]
    return spec


def test_transfer_trains_the_best_ticket_once_beside_its_dense_and_random_mask_controls() -> None:
    source = ObservedSource(found=True, status=finished_search())
    top1 = {"main": 70.0, "dense": 70.5, "random-prune": 61.0}
    spec = transfer_spec(head="keep")
    result, world, _ = drive(spec, Cluster(top1=lambda level, branch: top1[branch]), source=source)

    assert world.trained == ["run-prep", "run-level-00", "run-level-00-dense", "run-level-00-rprune"]
    status = result.status
    assert status.phase == "Succeeded"
    assert status.ticket is not None
    assert (status.ticket.run, status.ticket.level, status.ticket.density) == ("search", 2, 0.64)
    assert status.ticket.source == "run search level 2"
    rows = {e.branch: (e.density, e.top1) for e in status.levels}
    assert rows == {"main": (0.64, 70.0), "dense": (1.0, 70.5), "random-prune": (0.64, 61.0)}
    # The dense reference of a transfer run is its dense control on the target.
    assert status.dense_top1 == 70.5
    assert status.best is not None and (status.best.level, status.best.density) == (0, 0.64)
    resolved = status.condition("TicketResolved")
    assert resolved is not None and resolved.status == "True"


def test_a_new_head_leaves_the_density_to_the_result_and_later_levels_start_from_it() -> None:
    source = ObservedSource(found=True, status=finished_search())
    spec = transfer_spec(controls=[])
    spec["pruning"]["levels"] = 1
    world = Cluster()
    first = plan("run", 1, parse_spec(spec), None, world.children, T0, source)
    world.apply(first)
    world.finish_all(first)
    second = plan("run", 1, parse_spec(spec), first.status, world.children, T0)
    row = second.status.level_entry(0)
    assert row is not None and row.density is None  # the size of the new head decides it

    def finished(result: Plan, density: float) -> None:
        for name, child in list(world.children.items()):
            if child.state == "Running":
                done = LevelResult(level=0, density=density, top1=70.0)
                world.children[name] = ObservedChild(name, child.attempt, "Succeeded", result=done)

    world.apply(second)
    finished(second, 0.66)
    third = plan("run", 1, parse_spec(spec), second.status, world.children, T0)
    assert third.status.level_entry(1) is not None
    assert third.status.level_entry(1).density == pytest.approx(0.528)  # 0.66 * 0.8


def test_a_transferred_ticket_below_its_dense_control_succeeds_without_a_best_ticket() -> None:
    source = ObservedSource(found=True, status=finished_search())
    top1 = {"main": 60.0, "dense": 70.5, "random-prune": 58.0}
    result, _, _ = drive(
        transfer_spec(head="keep"), Cluster(top1=lambda level, branch: top1[branch]), source=source
    )
    assert result.status.phase == "Succeeded"
    assert result.status.best is None and result.status.dense_top1 == 70.5
    succeeded = result.status.condition("Succeeded")
    assert succeeded is not None and succeeded.reason == "LevelsDone"
    assert succeeded.message == (
        "transferred ticket (run search level 2): top-1 60.00% at density 0.6400, dense 70.50%; "
        "all levels finished"
    )


def test_transfer_continues_imp_from_the_ticket_when_asked_for_levels() -> None:
    source = ObservedSource(found=True, status=finished_search())
    spec = transfer_spec(level=1, controls=["dense"], head="keep")
    spec["pruning"].update(levels=2, controls={"branches": ["random-reinit"]})
    result, world, _ = drive(spec, source=source)

    assert sorted(world.trained) == [
        "run-level-00",
        "run-level-00-dense",
        "run-level-01",
        "run-level-01-reinit",
        "run-level-02",
        "run-level-02-reinit",
        "run-prep",
    ]
    densities = {(e.level, e.branch): e.density for e in result.status.levels}
    assert densities[(0, "main")] == 0.8  # the ticket of level 1
    assert densities[(1, "main")] == pytest.approx(0.64)
    assert densities[(2, "main")] == pytest.approx(0.512)
    assert densities[(0, "dense")] == 1.0


@pytest.mark.parametrize(
    ("source", "reason", "words"),
    [
        (
            ObservedSource(found=False),
            "TicketNotFound",
            "LotteryTicketRun 'search' (spec.ticket.run) does not exist",
        ),
        (
            ObservedSource(found=True, status=RunStatus(phase="Training")),
            "TicketNotReady",
            "'search' (spec.ticket.run) is Training, not Succeeded",
        ),
        (
            ObservedSource(found=True, status=None),
            "TicketNotReady",
            "'search' (spec.ticket.run) has no status",
        ),
    ],
)
def test_a_missing_or_unfinished_source_run_fails_the_transfer_without_children(
    source: ObservedSource, reason: str, words: str
) -> None:
    result, world, _ = drive(transfer_spec(), source=source)

    assert world.trained == []
    assert result.status.phase == "Failed"
    for type_ in ("TicketResolved", "Failed"):
        condition = result.status.condition(type_)
        assert condition is not None and condition.reason == reason and words in condition.message
    assert any(e.reason == reason and e.type == "Warning" for e in world.events)


def test_a_source_without_the_named_level_or_of_another_architecture_is_refused() -> None:
    search = finished_search()
    result, world, _ = drive(transfer_spec(level=7), source=ObservedSource(found=True, status=search))
    failed = result.status.condition("Failed")
    assert (
        failed is not None and failed.reason == "TicketNotReady" and "no finished level 7" in failed.message
    )
    assert world.trained == []

    spec = transfer_spec()
    spec["model"] = {"arch": "resnet18"}
    result, world, _ = drive(spec, source=ObservedSource(found=True, status=search))
    failed = result.status.condition("Failed")
    assert failed is not None and failed.reason == "TicketMismatch"
    assert "is a resnet50 ticket, but spec.model.arch is resnet18" in failed.message
    assert world.trained == []


def test_a_source_run_on_another_volume_is_refused() -> None:
    spec = transfer_spec()
    spec["storage"] = {"claimName": "other-data"}
    result, world, _ = drive(spec, source=ObservedSource(found=True, status=finished_search()))
    failed = result.status.condition("Failed")
    assert failed is not None and failed.reason == "TicketMismatch" and world.trained == []
    assert "keeps its files on volume 'lth-data'" in failed.message and "spec.storage" in failed.message


def test_the_ticket_is_resolved_once_and_later_changes_of_its_source_do_not_matter() -> None:
    # drive() shows the source to the first plan only; every later plan sees none.
    result, _, _ = drive(transfer_spec(), source=ObservedSource(found=True, status=finished_search()))
    assert result.status.phase == "Succeeded"
    assert result.status.ticket is not None and result.status.ticket.level == 2


def test_a_ticket_directory_is_checked_where_the_executor_can_see_it() -> None:
    spec = transfer_spec()
    spec["ticket"] = {"path": "tickets/digits"}
    described = ObservedSource(
        found=True, description={"architecture": "resnet50", "density": 0.2, "top1": 75.0}
    )
    result, world, _ = drive(spec, source=described)
    assert result.status.phase == "Succeeded"
    assert result.status.ticket is not None
    assert (result.status.ticket.path, result.status.ticket.density) == ("tickets/digits", 0.2)

    corrupt = ObservedSource(found=True, problem="mask.safetensors: checksum mismatch")
    result, world, _ = drive(spec, source=corrupt)
    failed = result.status.condition("Failed")
    assert failed is not None and failed.reason == "TicketInvalid" and "checksum mismatch" in failed.message
    assert world.trained == []

    spec["ticket"] = {"url": "https://tickets.example.com/digits/"}
    result, world, _ = drive(spec)
    assert "run-level-00" in world.trained  # the trainer downloads it and checks it
    assert result.status.ticket is not None
    assert result.status.ticket.source == "url https://tickets.example.com/digits/"

    spec["ticket"] = {"path": "tickets/digits"}
    # An operator without the volume cannot look: the run goes on and the trainer checks the files.
    result, world, _ = drive(spec, source=None)
    assert "run-level-00" in world.trained
    assert result.status.ticket is not None and result.status.ticket.density is None


def test_transfer_spec_problems_name_the_field() -> None:
    from lth.api import RunSpec
    from lth.api.validation import check_name, check_spec

    both = RunSpec.model_validate(transfer_spec(path="tickets/x"))
    assert [p.path for p in check_spec(both)] == ["spec.ticket"]
    url = RunSpec.model_validate({**transfer_spec(), "ticket": {"path": "s3://bucket/ticket"}})
    assert [p.path for p in check_spec(url)] == ["spec.ticket.path"]
    two = RunSpec.model_validate({**transfer_spec(), "ticket": {"path": "x", "url": "https://h/t"}})
    assert [p.path for p in check_spec(two)] == ["spec.ticket"]
    keep = RunSpec.model_validate(transfer_spec(head="keep", pruneHead=True))
    assert [p.path for p in check_spec(keep)] == ["spec.ticket.pruneHead"]
    assert [p.path for p in check_name("search", RunSpec.model_validate(transfer_spec()))] == [
        "spec.ticket.run"
    ]
    assert RunSpec.model_validate(transfer_spec()).level_budget == 0
    assert RunSpec.model_validate(make_spec()).level_budget == 3


def test_a_child_that_failed_on_its_input_is_not_retried() -> None:
    spec = make_spec(retry={"training": {"backoffLimit": 3}})
    world = Cluster()
    status = None
    for step in range(20):
        result = plan("run", 1, parse_spec(spec), status, world.children, T0 + timedelta(minutes=step))
        world.apply(result)
        status = result.status
        if result.done:
            break
        for name, child in list(world.children.items()):
            if child.state != "Running":
                continue
            if name == "run-level-01":
                message = "levels/00/final.safetensors: truncated"
                world.children[name] = ObservedChild(name, child.attempt, "Failed", message, retryable=False)
            else:
                world.finish_all(result)
    assert status is not None and status.phase == "Failed"
    assert world.trained.count("run-level-01") == 1 and not world.deleted
    failed = status.condition("Failed")
    assert failed is not None and failed.reason == "LevelFailed"
    assert failed.message == (
        "PyTorchJob run-level-01 failed on its input (not retried): levels/00/final.safetensors: truncated"
    )


# ---------------------------------------------------------------------- stuck children

PULL = Stuck(
    "ImagePullBackOff", "pod run-level-00-master-0 container pytorch", 'Back-off pulling image "t:1"'
)
PULL_AGAIN = Stuck(
    "ImagePullBackOff",
    "pod run-level-00-master-0 container pytorch",
    'ErrImagePull: rpc error: code = NotFound desc = failed to pull and unpack image "t:1"',
)


def started_level_zero() -> tuple[dict[str, Any], Plan]:
    spec = make_spec(dataset={"format": "prepared"})
    first = plan("run", 1, parse_spec(spec), None, {}, T0)
    assert [a.name for a in first.creates] == ["run-level-00"]
    return spec, first


def stuck(name: str, why: Stuck | None, state: Any = "Pending") -> dict[str, ObservedChild]:
    return {name: ObservedChild(name, 1, state, stuck=why)}


def warned(result: Plan) -> list[EmitEvent]:
    return [a for a in result.actions if isinstance(a, EmitEvent) and a.type == "Warning"]


def test_a_stuck_child_is_the_progressing_reason_and_its_rows_message() -> None:
    spec, first = started_level_zero()
    result = plan("run", 1, parse_spec(spec), first.status, stuck("run-level-00", PULL), T0)
    progressing = result.status.condition("Progressing")
    assert progressing is not None and progressing.status == "True"
    assert progressing.reason == "ImagePullBackOff"
    assert progressing.message == (
        'pod run-level-00-master-0 container pytorch: ImagePullBackOff: Back-off pulling image "t:1"'
    )
    row = result.status.level_entry(0)
    assert row is not None and row.phase == "Pending" and row.message == progressing.message
    assert warned(result) == [EmitEvent("Warning", "ImagePullBackOff", progressing.message)]
    assert result.status.phase == "Training"


def test_a_stuck_child_warns_once_across_replays_while_the_kubelet_alternates() -> None:
    spec, first = started_level_zero()
    status, events = first.status, []
    for step in range(6):
        why = PULL if step % 2 else PULL_AGAIN
        result = plan(
            "run", 1, parse_spec(spec), status, stuck("run-level-00", why), T0 + timedelta(minutes=step)
        )
        again = plan(
            "run", 1, parse_spec(spec), status, stuck("run-level-00", why), T0 + timedelta(minutes=step)
        )
        assert again == result  # a replay of the same pass asks for the same
        events += warned(result)
        status = result.status
        assert status.condition("Progressing").reason == "ImagePullBackOff"  # type: ignore[union-attr]
        assert status.condition("Progressing").message == why.message  # type: ignore[union-attr]
    assert [e.reason for e in events] == ["ImagePullBackOff"]


def test_a_new_cause_or_pod_is_a_new_warning() -> None:
    spec, first = started_level_zero()
    pulled = plan("run", 1, parse_spec(spec), first.status, stuck("run-level-00", PULL), T0)
    root = Stuck(
        "CreateContainerConfigError",
        "pod run-level-00-worker-0 init container init-pytorch",
        "container has runAsNonRoot and image will run as root "
        '(pod: "run-level-00-worker-0_ml(0f1e)", container: init-pytorch)',
    )
    refused = plan("run", 1, parse_spec(spec), pulled.status, stuck("run-level-00", root, "Running"), T0)
    assert [e.reason for e in warned(refused)] == ["CreateContainerConfigError"]
    progressing = refused.status.condition("Progressing")
    assert progressing is not None and progressing.reason == "CreateContainerConfigError"
    assert "run-level-00-worker-0" in progressing.message and "init-pytorch" in progressing.message


def test_a_child_that_runs_again_brings_back_the_usual_progressing() -> None:
    spec, first = started_level_zero()
    held = plan("run", 1, parse_spec(spec), first.status, stuck("run-level-00", PULL), T0)
    freed = plan("run", 1, parse_spec(spec), held.status, stuck("run-level-00", None, "Running"), T0)
    progressing = freed.status.condition("Progressing")
    assert progressing is not None and (progressing.reason, progressing.status) == ("Training", "True")
    assert progressing.message == first.status.condition("Progressing").message  # type: ignore[union-attr]
    assert freed.status.level_entry(0).message is None  # type: ignore[union-attr]
    assert warned(freed) == []
    # held again later: a new episode, a new warning
    again = plan("run", 1, parse_spec(spec), freed.status, stuck("run-level-00", PULL), T0)
    assert [e.reason for e in warned(again)] == ["ImagePullBackOff"]


def test_a_stuck_child_is_never_failed_or_retried() -> None:
    spec, first = started_level_zero()
    status = first.status
    for hour in range(48):
        result = plan(
            "run", 1, parse_spec(spec), status, stuck("run-level-00", PULL), T0 + timedelta(hours=hour)
        )
        assert [a for a in result.actions if not isinstance(a, EmitEvent)] == []
        status = result.status
    row = status.level_entry(0)
    assert status.phase == "Training" and row is not None
    assert (row.phase, row.attempts) == ("Pending", 1)
    assert status.condition("Failed") is None


def test_stuck_preprocessing_and_a_job_waiting_for_its_queue() -> None:
    spec = make_spec()
    first = plan("run", 1, parse_spec(spec), None, {}, T0)
    driver = Stuck(
        "Unschedulable",
        "pod run-prep-driver",
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: "
        "1 No preemption victims found for incoming pod.",
    )
    held = plan("run", 1, parse_spec(spec), first.status, stuck("run-prep", driver), T0)
    assert held.status.phase == "Preprocessing" and held.status.preprocessing is not None
    assert held.status.condition("Progressing").reason == "Unschedulable"  # type: ignore[union-attr]
    assert held.status.preprocessing.message == driver.message
    assert [e.reason for e in warned(held)] == ["Unschedulable"]

    spec, first = started_level_zero()
    queue = Stuck(
        "WaitingForQueue", "PyTorchJob run-level-00", "suspended until Kueue admits it from queue 'gpu'"
    )
    child = {
        "run-level-00": ObservedChild(
            "run-level-00", 1, "Pending", "PyTorchJob run-level-00 is suspended.", stuck=queue
        )
    }
    waiting = plan("run", 1, parse_spec(spec), first.status, child, T0)
    progressing = waiting.status.condition("Progressing")
    assert (
        progressing is not None and progressing.reason == "WaitingForQueue" and "'gpu'" in progressing.message
    )


def test_each_stuck_child_warns_once_and_the_first_is_the_condition() -> None:
    spec = make_spec(
        dataset={"format": "prepared"},
        resources={"maxParallelJobs": 2},
        pruning={"controls": {"branches": ["random-reinit"]}},
    )
    first = plan("run", 1, parse_spec(spec), None, {}, T0)
    dense = {
        "run-level-00": ObservedChild(
            "run-level-00", 1, "Succeeded", result=LevelResult(level=0, density=1.0, top1=76.0)
        )
    }
    second = plan("run", 1, parse_spec(spec), first.status, dense, T0)
    assert [a.name for a in second.creates] == ["run-level-01", "run-level-01-reinit"]
    level = Stuck("Unschedulable", "pod run-level-01-master-0", "0/1 nodes are available")
    control = Stuck("ImagePullBackOff", "pod run-level-01-reinit-master-0 container pytorch", "Back-off")
    children = {
        **dense,
        **stuck("run-level-01", level),
        **stuck("run-level-01-reinit", control),
    }
    result = plan("run", 1, parse_spec(spec), second.status, children, T0)
    assert [e.message for e in warned(result)] == [level.message, control.message]
    progressing = result.status.condition("Progressing")
    assert progressing is not None and progressing.reason == "Unschedulable"
    assert progressing.message == f"{level.message} (and 1 more stuck)"
    assert result.status.level_entry(1, "random-reinit").message == control.message  # type: ignore[union-attr]
    assert warned(plan("run", 1, parse_spec(spec), result.status, children, T0)) == []


def test_a_stopped_child_is_started_again_at_the_same_attempt() -> None:
    """Nothing runs a recorded, unfinished child (the local runner was restarted): a restart
    that resumes from its checkpoints, not a retry, and not a child deleted by hand."""
    spec = make_spec()
    world = Cluster()
    status = None
    for step in range(3):  # prep, then level 0 created
        result = plan("run", 1, parse_spec(spec), status, world.children, T0 + timedelta(minutes=step))
        world.apply(result)
        status = result.status
        if step == 0:
            world.finish_all(result)
    assert status is not None and "run-level-00" in world.children
    stopped = {**world.children, "run-level-00": ObservedChild("run-level-00", 1, "Stopped")}
    result = plan("run", 1, parse_spec(spec), status, stopped, T0 + timedelta(minutes=9))
    assert result.creates == [CreateLevelJob("run-level-00", 0, "main", 1)]
    row = result.status.level_entry(0)
    assert row is not None and (row.phase, row.attempts) == ("Pending", 1)
    assert [(e.reason, e.type) for e in result.actions if isinstance(e, EmitEvent)] == [
        ("Restarted", "Normal")
    ]
    assert result.status.phase == "Training"


# ---------------------------------------------------------------------- export and progress


def test_an_ended_search_exports_its_ticket_and_stays_succeeded() -> None:
    spec = make_spec(pruning={"levels": 1}, export={"url": "s3://tickets/lth"})
    result, world, seen = drive(spec)
    assert world.created[-1] == "run-export"
    status = result.status
    assert status.phase == "Succeeded" and result.done
    assert status.export is not None and status.export.phase == "Succeeded"
    assert (status.export.path, status.export.url) == ("runs/run/ticket", "s3://tickets/lth")
    exported = status.condition("Exported")
    assert exported is not None and (exported.status, exported.reason) == ("True", "Exported")
    assert exported.message == "ticket and report in runs/run/ticket on volume lth-data and s3://tickets/lth"
    # While the Job ran, the run was Succeeded already and said it was exporting.
    during, _ = seen[-1]
    assert during is not None and during.phase == "Succeeded"
    exporting = during.condition("Exported")
    assert exporting is not None and (exporting.status, exporting.reason) == ("False", "Exporting")
    # The condition is written once: a later pass changes nothing.
    again = plan("run", 1, parse_spec(spec), status, world.children, T0 + timedelta(days=1))
    assert again.status == status and again.actions == []


def test_a_failed_export_is_retried_then_reported_without_failing_the_run() -> None:
    spec = make_spec(pruning={"levels": 0}, retry={"export": {"backoffLimit": 1}})
    result, world, _ = drive(spec, Cluster(fail={"run-export": 5}))
    assert world.created == ["run-prep", "run-level-00", "run-export", "run-export"]
    assert world.deleted == ["run-export"]  # the failed first attempt, before the second
    status = result.status
    assert status.phase == "Succeeded" and result.done
    assert status.export is not None and (status.export.phase, status.export.attempts) == ("Failed", 2)
    exported = status.condition("Exported")
    assert exported is not None and (exported.status, exported.reason) == ("False", "ExportFailed")
    assert "Job run-export failed after 2 attempt(s): OOMKilled" in exported.message
    assert status.condition("Failed") is None
    assert [e.reason for e in world.events if e.type == "Warning"] == ["Retrying", "ExportFailed"]


def test_a_failed_search_exports_its_finished_levels_and_one_without_any_does_not() -> None:
    result, world, _ = drive(make_spec(pruning={"levels": 2}), Cluster(fail={"run-level-01": 9}))
    assert result.status.phase == "Failed" and world.created[-1] == "run-export"
    assert result.status.export is not None and result.status.export.phase == "Succeeded"
    result, world, _ = drive(make_spec(), Cluster(fail={"run-prep": 9}))
    assert result.status.phase == "Failed" and "run-export" not in world.created
    assert result.status.export is None and result.status.condition("Exported") is None


def test_a_running_level_shows_its_latest_epoch_until_it_ends() -> None:
    spec = parse_spec(make_spec(pruning={"levels": 1}))
    world = Cluster()
    status = None
    for _ in range(3):  # prep created, prep done, level 0 created
        result = plan("run", 1, spec, status, world.children, T0)
        world.apply(result)
        status = result.status
        world.finish_all(result) if "run-level-00" not in world.children else None
    assert world.children["run-level-00"].state == "Running"
    epoch = EpochProgress(epoch=3, epochs=10, top1=41.5, images_per_second=1234.0, estimated_finish=T0)
    world.children["run-level-00"] = ObservedChild("run-level-00", 1, "Running", progress=epoch)
    read = plan("run", 1, spec, status, world.children, T0)
    row = read.status.level_entry(0)
    assert row is not None and row.progress == epoch and read.status.progress == "L0 3/10"
    # A pass that read no log (an event, not the resync timer) keeps what the last read saw.
    world.children["run-level-00"] = ObservedChild("run-level-00", 1, "Running")
    kept = plan("run", 1, spec, read.status, world.children, T0)
    assert kept.status.level_entry(0).progress == epoch  # type: ignore[union-attr]
    world.finish_all(kept)
    ended = plan("run", 1, spec, kept.status, world.children, T0)
    assert ended.status.level_entry(0).progress is None  # type: ignore[union-attr]
    assert ended.status.progress == "L1"  # level 1 was created: no epoch yet
