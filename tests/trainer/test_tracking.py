"""A level's curves as TensorBoard reads them (its own EventAccumulator), a level resumed after
a kill showing each epoch once, and a tracking server that does not answer failing nothing."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from lth.api import Branch, RunSpec
from lth.api.naming import RunLayout
from lth.storage.files import read_progress
from lth_trainer import tracking
from lth_trainer.cli import main
from lth_trainer.start import level_files
from tests.trainer.conftest import make_spec, trainer_args

SPEC = make_spec(pruning={"controls": {"branches": ["random-reinit"]}})  # 3 epochs, rewind to epoch 1


def events(run_dir: Path, level: int, branch: Branch = "main") -> EventAccumulator:
    accumulator = EventAccumulator(str(RunLayout(run_dir).tensorboard_run(level, branch)))
    accumulator.Reload()
    return accumulator


def steps(accumulator: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in accumulator.Scalars(tag)]


def progress(run_dir: Path, level: int, branch: Branch = "main") -> list[dict[str, Any]]:
    return read_progress(level_files(run_dir, level, branch).progress)


@pytest.fixture(scope="module")
def tracked_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    for level, branch in [(0, "main"), (1, "main"), (1, "random-reinit")]:
        assert main(trainer_args(run_dir, data_dir, SPEC, level, branch)) == 0
    return run_dir


def test_every_level_and_branch_is_a_tensorboard_run_on_the_global_epoch_axis(tracked_run: Path) -> None:
    assert sorted(p.name for p in RunLayout(tracked_run).tensorboard.iterdir()) == [
        "00-main",
        "01-main",
        "01-random-reinit",
    ]
    levels: list[tuple[int, Branch, list[int]]] = [(0, "main", [1, 2, 3]), (1, "main", [2, 3])]
    for level, branch, epochs in [*levels, (1, "random-reinit", [2, 3])]:
        run = events(tracked_run, level, branch)
        records = progress(tracked_run, level, branch)
        assert [r["epoch"] for r in records] == epochs  # a rewound level starts after epoch 1
        for tag, field in [("val/top1", "top1"), ("val/loss", "loss"), ("train/loss", "trainLoss"),
                           ("train/lr", "lr"), ("train/images_per_second", "imagesPerSecond")]:  # fmt: skip
            assert steps(run, tag) == [(r["epoch"], pytest.approx(r[field], rel=1e-4)) for r in records], tag
        assert "val/top5" not in run.Tags()["scalars"]  # 4 classes: no top-5


def test_a_level_starts_with_its_density_per_layer_and_its_hyperparameters(tracked_run: Path) -> None:
    start = json.loads(level_files(tracked_run, 1).start.read_text())
    run = events(tracked_run, 1)
    assert steps(run, "density/all") == [(1, pytest.approx(start["density"], abs=1e-4))]
    layers = {t.removeprefix("density/") for t in run.Tags()["scalars"] if t.startswith("density/")}
    assert layers == {"all", "conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"}
    assert all(steps(run, f"density/{name}")[0][1] < 1 for name in layers)  # every layer was pruned

    content = run.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["branch"].string_value == "main" and hparams["level"].number_value == 1
    assert hparams["training.lr"].number_value == pytest.approx(0.002)
    assert hparams["pruning.rewindTo"].string_value == "1ep"


class Killed(BaseException):
    """A kill between the epoch's checkpoint and its tracking (not an error a tracker contains)."""


def test_a_level_killed_after_a_checkpoint_shows_each_epoch_once(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_epoch = tracking.Trackers.epoch

    def die_at_epoch_2(self: tracking.Trackers, record: dict[str, Any]) -> None:
        if record["epoch"] == 2:
            raise Killed
        real_epoch(self, record)

    monkeypatch.setattr(tracking.Trackers, "epoch", die_at_epoch_2)
    with pytest.raises(Killed):
        main(trainer_args(tmp_path, data_dir, SPEC, 0))
    monkeypatch.undo()
    assert [r["epoch"] for r in progress(tmp_path, 0)] == [1, 2]  # checkpointed, not tracked
    assert [step for step, _ in steps(events(tmp_path, 0), "val/top1")] == [1]

    assert main(trainer_args(tmp_path, data_dir, SPEC, 0)) == 0
    run = events(tmp_path, 0)
    records = progress(tmp_path, 0)
    assert steps(run, "val/top1") == [(r["epoch"], pytest.approx(r["top1"], rel=1e-4)) for r in records]
    assert [step for step, _ in steps(run, "val/top1")] == [1, 2, 3]
    assert steps(run, "density/all") == [(0, 1.0)]


@pytest.fixture(params=["refused", "silent"])
def dead_server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A tracking URI that refuses connections, or one that accepts them and never answers
    (MLflow's timeout, set short here, is what ends each call)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    if request.param == "silent":
        listener.listen(16)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    port = listener.getsockname()[1]
    if request.param == "refused":
        listener.close()
    yield f"http://127.0.0.1:{port}"
    listener.close()


def test_a_tracking_server_that_does_not_answer_fails_no_level(
    data_dir: Path, tmp_path: Path, dead_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    spec = RunSpec.model_validate({**SPEC.to_wire(), "tracking": {"mlflow": {"trackingUri": dead_server}}})
    caplog.set_level(logging.INFO, logger="lth_trainer")
    for level in (0, 1):
        assert main(trainer_args(tmp_path, data_dir, spec, level)) == 0
        assert level_files(tmp_path, level).result.is_file()
    said = [r.getMessage() for r in caplog.records if "does not answer" in r.getMessage()]
    assert len(said) == 2, said  # once per level
    assert said[0].startswith(f"MLflow at {dead_server} does not answer (") and "training goes on" in said[0]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [step for step, _ in steps(events(tmp_path, 1), "val/top1")] == [2, 3]  # TensorBoard still has it
