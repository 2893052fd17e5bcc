"""IMP levels run in this process (world size 1): masks, rewinding, controls, outputs,
resume by existence, and bad inputs that name their file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lth.api import Branch
from lth.api.workload import EXIT_BAD_INPUT
from lth_trainer import pruning
from lth_trainer.cli import main
from lth_trainer.data import index as shard_index
from lth_trainer.start import level_files
from tests.trainer.conftest import make_spec, trainer_args

SPEC = make_spec()  # 3 epochs of 12 steps, Adam, rewind to 1 epoch


@pytest.fixture(scope="module")
def imp_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Levels 0-3 of the main line and both control branches of level 2; the reinit
    branch starts before main level 2, so it is the one that writes levels/02/mask."""
    run_dir = tmp_path_factory.mktemp("run")
    runs = [(0, "main"), (1, "main"), (2, "random-reinit"), (2, "main"), (2, "random-prune"), (3, "main")]
    for level, branch in runs:
        assert main(trainer_args(run_dir, data_dir, SPEC, level, branch)) == 0
    return run_dir


def masks(run_dir: Path, level: int, branch: Branch = "main") -> dict[str, torch.Tensor]:
    return load_file(str(level_files(run_dir, level, branch).mask))


def test_density_halves_geometrically_and_masks_nest(imp_run: Path) -> None:
    full = masks(imp_run, 0)
    total = pruning.size(full)
    assert pruning.kept(full) == total
    for level in range(1, 4):
        mask, before = masks(imp_run, level), masks(imp_run, level - 1)
        assert abs(pruning.kept(mask) - total * 0.8**level) <= len(mask)
        assert all(not (mask[n] & ~before[n]).any() for n in mask)
        result = json.loads(level_files(imp_run, level).result.read_text())
        assert result["density"] == pytest.approx(pruning.density(mask))


def test_level_mask_is_pruned_from_the_previous_levels_final_weights(imp_run: Path) -> None:
    final = load_file(str(level_files(imp_run, 1).final))
    expected = pruning.prune_global_magnitude(final, masks(imp_run, 1), 0.2)
    written = masks(imp_run, 2)  # written by the random-reinit job, which started first
    assert all(torch.equal(written[n], expected[n]) for n in expected)


@pytest.fixture(scope="module")
def lr_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Learning-rate rewinding to epoch 1 of 3: main levels 0-2 and level 2's random-prune."""
    run_dir = tmp_path_factory.mktemp("lr-run")
    for level, branch in [(0, "main"), (1, "main"), (2, "main"), (2, "random-prune")]:
        assert main(trainer_args(run_dir, data_dir, LR_SPEC, level, branch)) == 0
    return run_dir


LR_SPEC = make_spec(pruning={"rewind": "learning-rate"})  # rewindTo 1ep: step 12 of 36


def epochs_trained(run_dir: Path, level: int, branch: Branch = "main") -> list[int]:
    lines = level_files(run_dir, level, branch).progress.read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines]


def test_learning_rate_rewinding_trains_the_final_weights_from_step_k(lr_run: Path) -> None:
    """Renda et al. 2020: the weight-rewinding schedule from step k, applied to the final weights
    (so both modes train the same number of steps per level)."""
    start = json.loads(level_files(lr_run, 2).start.read_text())
    assert start["weights"] == "levels/01/final.safetensors" and start["step"] == 12
    assert start["rewind"] == "learning-rate"
    assert epochs_trained(lr_run, 2) == [2, 3]
    assert epochs_trained(lr_run, 0) == [1, 2, 3]


def test_learning_rate_rewinding_to_0_replays_the_whole_schedule(data_dir: Path, tmp_path: Path) -> None:
    spec = make_spec(epochs=2, pruning={"rewind": "learning-rate", "rewindTo": "0"})
    for level in (0, 1):
        assert main(trainer_args(tmp_path, data_dir, spec, level)) == 0
    start = json.loads(level_files(tmp_path, 1).start.read_text())
    assert start["weights"] == "levels/00/final.safetensors" and start["step"] == 0
    assert epochs_trained(tmp_path, 1) == [1, 2]


def test_random_prune_control_starts_where_the_ticket_starts_and_never_from_zeros(lr_run: Path) -> None:
    """Learning-rate mode: level 1's final weights are 0 wherever level 1 pruned, so the random
    mask is drawn among the weights level 1 kept; same per-layer count, same weights, same step."""
    ticket = json.loads(level_files(lr_run, 2).start.read_text())
    control = json.loads(level_files(lr_run, 2, "random-prune").start.read_text())
    assert (control["weights"], control["step"]) == (ticket["weights"], ticket["step"])
    start = load_file(str(level_files(lr_run, 1).final))
    rprune, main_mask, before = masks(lr_run, 2, "random-prune"), masks(lr_run, 2), masks(lr_run, 1)
    assert {n: int(m.sum()) for n, m in rprune.items()} == {n: int(m.sum()) for n, m in main_mask.items()}
    assert all(not (rprune[n] & ~before[n]).any() for n in rprune)
    assert all(start[n][rprune[n]].abs().min() > 0 for n in rprune)
    assert not all(torch.equal(rprune[n], main_mask[n]) for n in main_mask)


def test_pruned_weights_are_zero_after_training(imp_run: Path) -> None:
    cases: list[tuple[int, Branch]] = [(1, "main"), (3, "main"), (2, "random-reinit"), (2, "random-prune")]
    for level, branch in cases:
        final = load_file(str(level_files(imp_run, level, branch).final))
        for name, keep in masks(imp_run, level, branch).items():
            assert final[name][~keep].abs().max() == 0, (level, branch, name)
            assert final[name][keep].abs().min() > 0


def test_rewind_weights_are_theta_k_and_later_levels_start_from_them(
    imp_run: Path, data_dir: Path, tmp_path: Path
) -> None:
    one_epoch = make_spec(epochs=1, pruning={"rewindTo": "0"})  # same constant schedule, stopped at k
    assert main(trainer_args(tmp_path, data_dir, one_epoch, 0)) == 0
    theta_k = load_file(str(level_files(tmp_path, 0).final))
    rewind = load_file(str(level_files(imp_run, 0).rewind))
    assert all(torch.equal(rewind[n], theta_k[n]) for n in theta_k)
    start = json.loads(level_files(imp_run, 2).start.read_text())
    assert start["weights"] == "levels/00/rewind.safetensors" and start["step"] == 12
    assert start["mask"] == "levels/02/mask.safetensors"


def test_control_branches_use_the_levels_mask_or_its_per_layer_density(imp_run: Path) -> None:
    main_mask = masks(imp_run, 2)
    reinit = masks(imp_run, 2, "random-reinit")
    rprune = masks(imp_run, 2, "random-prune")
    assert all(torch.equal(reinit[n], main_mask[n]) for n in main_mask)
    assert {n: int(m.sum()) for n, m in rprune.items()} == {n: int(m.sum()) for n, m in main_mask.items()}
    assert not all(torch.equal(rprune[n], main_mask[n]) for n in main_mask)
    assert json.loads(level_files(imp_run, 2, "random-reinit").start.read_text())["weights"].startswith(
        "fresh"
    )
    rows = [
        json.loads(line) for line in level_files(imp_run, 2, "random-prune").progress.read_text().splitlines()
    ]
    assert [r["epoch"] for r in rows] == [2, 3]  # rewound to epoch 1 of 3
    assert set(rows[0]) >= {"epoch", "step", "top1", "imagesPerSecond", "trainLoss"}


def test_a_finished_level_exits_at_once_and_rewrites_only_the_termination_message(
    imp_run: Path, data_dir: Path
) -> None:
    files = level_files(imp_run, 1)
    before = {p.name: p.stat().st_mtime_ns for p in files.dir.iterdir()}
    termination = imp_run / "termination-1-main"
    termination.unlink()
    assert main(trainer_args(imp_run, data_dir, SPEC, 1)) == 0
    assert {p.name: p.stat().st_mtime_ns for p in files.dir.iterdir()} == before
    message = termination.read_text()
    assert len(message) <= 4096 and json.loads(message) == json.loads(files.result.read_text())
    assert json.loads(message)["level"] == 1 and 0 <= json.loads(message)["top1"] <= 100


def test_an_unwritable_termination_log_is_ignored(imp_run: Path, data_dir: Path) -> None:
    args = trainer_args(imp_run, data_dir, SPEC, 1)
    args[args.index("--termination-log") + 1] = str(imp_run / "no-such-dir" / "termination-log")
    assert main(args) == 0


def test_missing_mask_when_the_previous_level_has_no_final_weights(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    level_files(tmp_path, 0).dir.mkdir(parents=True)
    assert main(trainer_args(tmp_path, data_dir, SPEC, 1)) == EXIT_BAD_INPUT
    message = (tmp_path / "termination-1-main").read_text()
    assert str(level_files(tmp_path, 1).mask) in message and str(level_files(tmp_path, 0).final) in message
    assert message in caplog.text


def test_level_gap_names_the_missing_level(data_dir: Path, tmp_path: Path) -> None:
    assert main(trainer_args(tmp_path, data_dir, SPEC, 2)) == EXIT_BAD_INPUT
    message = (tmp_path / "termination-2-main").read_text()
    assert str(level_files(tmp_path, 1).dir) in message and "gap" in message


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_checkpoint_names_the_file(data_dir: Path, tmp_path: Path, damage: str) -> None:
    assert main(trainer_args(tmp_path, data_dir, make_spec(epochs=1, pruning={"rewindTo": "0"}), 0)) == 0
    files = level_files(tmp_path, 0)
    files.result.unlink()
    blob = files.checkpoint.read_bytes()
    files.checkpoint.write_bytes(blob[: len(blob) // 2] if damage == "truncate" else os.urandom(len(blob)))
    assert main(trainer_args(tmp_path, data_dir, SPEC, 0)) == EXIT_BAD_INPUT
    assert str(files.checkpoint) in (tmp_path / "termination-0-main").read_text()


def test_missing_shard_and_missing_manifest_name_the_file(data_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "data"
    copy.mkdir()
    for p in data_dir.iterdir():
        (copy / p.name).symlink_to(p)
    (copy / "train-00001.tar").unlink()
    assert main(trainer_args(tmp_path, copy, SPEC, 0)) == EXIT_BAD_INPUT
    assert str(copy / "train-00001.tar") in (tmp_path / "termination-0-main").read_text()
    (copy / "manifest.json").unlink()
    assert main(trainer_args(tmp_path, copy, SPEC, 0)) == EXIT_BAD_INPUT
    assert str(copy / "manifest.json") in (tmp_path / "termination-0-main").read_text()


def test_bad_spec_and_branch_on_level_zero_are_refused(data_dir: Path, tmp_path: Path) -> None:
    assert main(trainer_args(tmp_path, data_dir, SPEC, 0, "random-reinit")) == EXIT_BAD_INPUT
    assert "--branch random-reinit" in (tmp_path / "termination-0-random-reinit").read_text()
    args = trainer_args(tmp_path, data_dir, SPEC, 0)
    args[-1] = args[-1].replace('"epochs":3', '"epochs":-3')
    assert main(args) == EXIT_BAD_INPUT
    assert "training.epochs" in (tmp_path / "termination-0-main").read_text()


def test_the_shard_index_is_scanned_once_per_run_and_read_after(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec(epochs=1, pruning={"rewindTo": "0"})
    assert main(trainer_args(tmp_path, data_dir, spec, 0)) == 0
    assert {p.name for p in (tmp_path / "index").iterdir()} == {"train.npz", "val.npz"}

    def no_scan(path: Path) -> None:
        raise AssertionError(f"{path} scanned again")

    monkeypatch.setattr(shard_index, "scan_shard", no_scan)
    assert main(trainer_args(tmp_path, data_dir, spec, 1)) == 0  # the index is read, not rescanned
    with pytest.raises(AssertionError, match="scanned again"):  # another run scans its own, once
        main(trainer_args(tmp_path / "other-run", data_dir, spec, 0))
