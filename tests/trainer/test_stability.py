"""The instability analysis' jobs in this process (rewindTo auto): level 0 saves every candidate
point, two copies train from one with their own data orders, the path between them is
evaluated; the barrier of a network with itself is 0 and that of two independently initialised
networks is large; a pruned level rewinds to the point it is given."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lth.api import RunSpec
from lth.api.naming import RunLayout
from lth.api.workload import EXIT_BAD_INPUT, spec_json
from lth_trainer.cli import main
from lth_trainer.start import level_files
from tests.trainer.conftest import make_spec, trainer_args

SPEC = make_spec(pruning={"rewindTo": "auto"})  # 3 epochs of 12 steps: ladder 0, 0.25, 0.5 epochs
STEPS = {0: 0, 1: 3, 2: 6}


def stability_args(run_dir: Path, data: Path, spec: RunSpec, point: int, part: str) -> list[str]:
    return [
        "--run-dir", str(run_dir), "--data", str(data), "--stability-point", str(point),
        "--stability-part", part, "--termination-log", str(run_dir / f"termination-{point}-{part}"),
        "--spec-json", spec_json(spec),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def analysed(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Level 0, then both copies of point 1 (k = 0.25 epochs) and the path between them."""
    run_dir = tmp_path_factory.mktemp("auto")
    assert main(trainer_args(run_dir, data_dir, SPEC, 0)) == 0
    for part in ("a", "b", "path"):
        assert main(stability_args(run_dir, data_dir, SPEC, 1, part)) == 0
    return run_dir


def result(run_dir: Path, point: int, part: str) -> dict[str, object]:
    return json.loads(RunLayout(run_dir).stability(point, part).result.read_text())  # type: ignore[no-any-return]


def test_level_0_saves_theta_at_every_candidate_point_and_no_fixed_one(analysed: Path) -> None:
    root = level_files(analysed, 0)
    assert SPEC.pruning.stability.ladder(3) == [0.0, 0.25, 0.5]
    assert all(root.rewind_at(step).is_file() for step in STEPS.values())
    assert not root.rewind.exists()
    init = load_file(str(root.init))
    assert all(torch.equal(init[n], t) for n, t in load_file(str(root.rewind_at(0))).items())


def test_two_copies_train_from_theta_k_with_their_own_data_orders(analysed: Path) -> None:
    layout = RunLayout(analysed)
    starts = [json.loads(layout.stability(1, part).start.read_text()) for part in ("a", "b")]
    assert [s["step"] for s in starts] == [3, 3]
    assert all(s["weights"] == "levels/00/rewind-at-3.safetensors" for s in starts)
    assert starts[0]["dataSeed"] != starts[1]["dataSeed"]
    a, b = (load_file(str(layout.stability(1, part).final)) for part in ("a", "b"))
    assert any(not torch.equal(a[n], b[n]) for n in a)  # SGD noise made them differ
    for part in ("a", "b"):
        copy = result(analysed, 1, part)
        assert (copy["step"], copy["trainedEpochs"], copy["density"]) == (3, 2.75, 1.0)


def test_the_path_reports_the_error_at_each_point_and_its_barrier(analysed: Path) -> None:
    path = result(analysed, 1, "path")
    errors = path["errors"]
    assert isinstance(errors, list) and len(errors) == 11
    a, b = result(analysed, 1, "a"), result(analysed, 1, "b")
    assert errors[0] == pytest.approx(100 - a["top1"], abs=1e-3)  # type: ignore[operator]
    assert errors[-1] == pytest.approx(100 - b["top1"], abs=1e-3)  # type: ignore[operator]
    assert path["instability"] == pytest.approx(max(errors) - (errors[0] + errors[-1]) / 2)


def test_the_barrier_of_a_network_with_itself_is_zero(analysed: Path, data_dir: Path) -> None:
    layout = RunLayout(analysed)
    for part in ("a", "b"):  # copy a twice: one network, at both ends of the path
        layout.stability(2, part).dir.mkdir(parents=True)
        shutil.copy(layout.stability(1, "a").final, layout.stability(2, part).final)
    assert main(stability_args(analysed, data_dir, SPEC, 2, "path")) == 0
    path = result(analysed, 2, "path")
    assert path["instability"] == 0.0
    assert len(set(path["errors"])) == 1  # type: ignore[arg-type]


def test_two_independently_initialised_networks_show_a_large_barrier(data_dir: Path, tmp_path: Path) -> None:
    """Trained from different inits, two networks land in different basins (permutations of
    each other at best): the middle of the straight line between them is far worse than either."""
    layout = RunLayout(tmp_path / "pair")
    for seed, part in ((1, "a"), (2, "b")):
        own = tmp_path / f"seed{seed}"
        assert main(trainer_args(own, data_dir, make_spec(seed=seed), 0)) == 0
        layout.stability(0, part).dir.mkdir(parents=True)
        shutil.copy(level_files(own, 0).final, layout.stability(0, part).final)
    assert main(stability_args(layout.root, data_dir, SPEC, 0, "path")) == 0
    path = result(layout.root, 0, "path")
    assert path["errors"][0] < 10 and path["errors"][-1] < 10  # type: ignore[index]
    assert path["instability"] > 20  # type: ignore[operator]


def test_a_pruned_level_rewinds_to_the_point_it_is_given(analysed: Path, data_dir: Path) -> None:
    assert main(trainer_args(analysed, data_dir, SPEC, 1)) == EXIT_BAD_INPUT  # auto, but no point
    assert main([*trainer_args(analysed, data_dir, SPEC, 1), "--rewind-to", "0.25ep"]) == 0
    root = level_files(analysed, 0)
    assert root.rewind.read_bytes() == root.rewind_at(3).read_bytes()
    start = json.loads(level_files(analysed, 1).start.read_text())
    assert (start["step"], start["weights"]) == (3, "levels/00/rewind.safetensors")
