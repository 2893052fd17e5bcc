"""The gradual search (spec.pruning.search.method gradual) in this process: the search level
prunes as it trains and keeps each ticket's mask; the ticket levels train it in full from the
rewind point; a search killed after a checkpoint resumes to the same masks and weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from lth.api import RunSpec
from lth_trainer import pruning
from lth_trainer.cli import main
from lth_trainer.start import level_files
from lth_trainer.training import loop, setup
from tests.trainer.conftest import make_spec, trainer_args

SEARCH = {"search": {"method": "gradual", "densities": [0.5, 0.3], "epochs": 2}}
SPEC = make_spec(pruning=SEARCH)  # 3 epochs of 12 steps, rewind to 1 epoch; the search trains 2


def masks(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def result(run_dir: Path, level: int, branch: Any = "main") -> dict[str, Any]:
    return json.loads(level_files(run_dir, level, branch).result.read_text())


@pytest.fixture(scope="module")
def gradual_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("gradual")
    for level, branch in [(0, "main"), (1, "main"), (2, "main"), (3, "main"), (3, "random-reinit")]:
        assert main(trainer_args(run_dir, data_dir, SPEC, level, branch)) == 0
    return run_dir


def test_the_spec_lays_out_dense_search_and_one_level_per_ticket() -> None:
    pruning_spec = SPEC.pruning
    assert SPEC.level_budget == 3
    assert [pruning_spec.level_density(level) for level in range(4)] == [1.0, 0.3, 0.5, 0.3]
    assert [pruning_spec.is_ticket_level(level) for level in range(4)] == [False, False, True, True]
    assert pruning_spec.search_densities() == pytest.approx(
        [0.8, 0.64, 0.5, 0.4096, 0.3]
    )  # 0.512, 0.328: near
    assert SPEC.control_branches(1) == [] and SPEC.control_branches(3) == SPEC.pruning.controls.branches


def test_the_search_prunes_as_it_trains_and_keeps_each_tickets_mask(gradual_run: Path) -> None:
    search = level_files(gradual_run, 1)
    at_half, at_third = masks(search.mask_for(2)), masks(search.mask_for(3))
    assert pruning.density(at_half) == pytest.approx(0.5, abs=1e-3)
    assert pruning.density(at_third) == pytest.approx(0.3, abs=1e-3)
    assert all(not (at_third[n] & ~at_half[n]).any() for n in at_half)  # the masks nest
    final = masks(search.final)
    assert all(not final[n][~at_third[n]].any() for n in at_third)  # pruned weights stay 0
    assert result(gradual_run, 1)["density"] == pytest.approx(0.3, abs=1e-3)
    assert result(gradual_run, 1)["trainedEpochs"] == 2
    start = json.loads(search.start.read_text())
    assert start["weights"] == "levels/00/final.safetensors" and start["step"] == 12  # the last 2 of 3 epochs


def test_ticket_levels_train_the_searched_mask_in_full_from_the_rewind_point(gradual_run: Path) -> None:
    for level in (2, 3):
        files = level_files(gradual_run, level)
        searched = masks(level_files(gradual_run, 1).mask_for(level))
        assert all(torch.equal(masks(files.mask)[n], searched[n]) for n in searched)
        start = json.loads(files.start.read_text())
        assert start["weights"] == "levels/00/rewind.safetensors" and start["step"] == 12
        assert result(gradual_run, level)["trainedEpochs"] == 2  # from 1 of 3 epochs on
    reinit = level_files(gradual_run, 3, "random-reinit")
    assert all(
        torch.equal(masks(reinit.mask)[n], masks(level_files(gradual_run, 3).mask)[n]) for n in searched
    )
    assert result(gradual_run, 0)["trainedEpochs"] == 3


def test_the_search_level_has_no_controls(gradual_run: Path, data_dir: Path) -> None:
    assert main(trainer_args(gradual_run, data_dir, SPEC, 1, "random-reinit")) != 0


class Killed(Exception):
    pass


def test_a_search_killed_after_a_checkpoint_resumes_to_the_same_masks(
    data_dir: Path, tmp_path: Path, gradual_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the search's first epoch (mid-way through its prune steps): the rerun
    resumes from the checkpoint, with the mask it had then, and ends where an uninterrupted
    search ends, bit for bit."""
    run_dir = tmp_path / "killed"
    assert main(trainer_args(run_dir, data_dir, SPEC, 0)) == 0
    real_end_epoch = loop.end_epoch

    def end_epoch_then_die(run: setup.LevelRun) -> None:
        real_end_epoch(run)
        raise Killed

    monkeypatch.setattr(loop, "end_epoch", end_epoch_then_die)
    with pytest.raises(Killed):
        main(trainer_args(run_dir, data_dir, SPEC, 1))
    monkeypatch.undo()
    files = level_files(run_dir, 1)
    state = torch.load(files.checkpoint, weights_only=True)
    assert state["step"] == 24 and 0.3 < pruning.density(state["mask"]) < 1.0  # mid-search
    assert not files.result.exists()

    assert main(trainer_args(run_dir, data_dir, SPEC, 1)) == 0
    whole = level_files(gradual_run, 1)
    for mine, theirs in [(files.final, whole.final), (files.mask_for(2), whole.mask_for(2)),
                         (files.mask_for(3), whole.mask_for(3))]:  # fmt: skip
        a, b = masks(mine), masks(theirs)
        assert all(torch.equal(a[n], b[n]) for n in a)
    assert [json.loads(line)["epoch"] for line in files.progress.read_text().splitlines()] == [2, 3]


def test_an_imp_spec_is_unchanged_by_the_search_option() -> None:
    spec = RunSpec.model_validate(
        {**SPEC.model_dump(by_alias=True), "pruning": {"fraction": 0.2, "levels": 4}}
    )
    assert spec.pruning.search.method == "imp" and spec.level_budget == 4
    assert [spec.pruning.is_ticket_level(level) for level in range(3)] == [False, True, True]


def test_a_search_from_the_rewind_point_trains_its_epochs_from_step_k(data_dir: Path, tmp_path: Path) -> None:
    search = {"method": "gradual", "densities": [0.5, 0.3], "epochs": 1, "start": "rewind"}
    spec = make_spec(pruning={"search": search})
    for level in (0, 1, 3):
        assert main(trainer_args(tmp_path, data_dir, spec, level)) == 0
    files = level_files(tmp_path, 1)
    start = json.loads(files.start.read_text())
    assert start["weights"] == "levels/00/rewind.safetensors" and start["step"] == 12  # k = 1 epoch
    assert result(tmp_path, 1)["trainedEpochs"] == 1
    assert [json.loads(line)["epoch"] for line in files.progress.read_text().splitlines()] == [2]
    assert pruning.density(masks(files.mask_for(3))) == pytest.approx(0.3, abs=1e-3)
    assert result(tmp_path, 3)["trainedEpochs"] == 2


SHORT = make_spec(
    pruning={"fraction": 0.4, "search": {"method": "short-imp", "densities": [0.36, 0.2], "epochs": 1}}
)
"""Search levels 1-2 at 60 % and 36 % train 1 of 3 epochs from the rewind point (step 12 to 24);
ticket level 3 trains level 2's mask (36 %) in full, ticket level 4 the mask pruned from
level 2's final weights (20 %)."""


def test_short_imp_trains_short_levels_then_each_ticket_in_full(data_dir: Path, tmp_path: Path) -> None:
    assert SHORT.pruning.search_densities() == pytest.approx([0.6, 0.36, 0.2])
    assert SHORT.level_budget == 4 and SHORT.pruning.search_levels() == 2
    for level in range(5):
        assert main(trainer_args(tmp_path, data_dir, SHORT, level)) == 0
    assert main(trainer_args(tmp_path, data_dir, SHORT, 4, "random-reinit")) == 0
    assert main(trainer_args(tmp_path, data_dir, SHORT, 2, "random-reinit")) != 0  # no controls
    for level, density, epochs in [(1, 0.6, 1), (2, 0.36, 1), (3, 0.36, 2), (4, 0.2, 2)]:
        assert result(tmp_path, level)["density"] == pytest.approx(density, abs=1e-3)
        assert result(tmp_path, level)["trainedEpochs"] == epochs
        start = json.loads(level_files(tmp_path, level).start.read_text())
        assert start["weights"] == "levels/00/rewind.safetensors" and start["step"] == 12
    level_two, ticket = masks(level_files(tmp_path, 2).mask), masks(level_files(tmp_path, 3).mask)
    assert all(torch.equal(level_two[n], ticket[n]) for n in ticket)
    pruned = pruning.prune_global_magnitude(
        masks(level_files(tmp_path, 2).final),
        level_two,
        1 - round(0.2 * pruning.size(level_two)) / pruning.kept(level_two),
    )
    sparsest = masks(level_files(tmp_path, 4).mask)
    assert all(torch.equal(pruned[n], sparsest[n]) for n in sparsest)
