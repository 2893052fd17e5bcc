"""Transfer runs (spec.ticket) in this process: level 0 trains a ticket found by a source
run on other data, beside its controls; later levels prune on from it; bad tickets are
refused with a message that names the file or field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from lth.api import Branch, RunSpec
from lth.api.naming import FINAL_FILE, MASK_FILE, TICKET_FILE
from lth.api.workload import EXIT_BAD_INPUT
from lth.storage.tickets import TicketFiles, describe
from lth_trainer import pruning
from lth_trainer.cli import main
from lth_trainer.models import build_model
from lth_trainer.start import level_files, plan_start
from tests.serving import serving
from tests.trainer.conftest import make_spec, trainer_args
from tests.trainer.shards import pattern_images, write_shards

SOURCE = make_spec(epochs=2)  # 12 steps per epoch on 240 images, rewind to epoch 1
HEAD = "fc2.weight"


def transfer_spec(**ticket: Any) -> RunSpec:
    where = {} if "path" in ticket or "url" in ticket else {"run": "source", "level": 1}
    wire = {**SOURCE.to_wire(), "ticket": {**where, **ticket}}
    wire["pruning"]["levels"] = 1
    return RunSpec.model_validate(wire)


def train(
    run_dir: Path, data: Path, spec: RunSpec, ticket: list[str], level: int = 0, branch: str = "main"
) -> int:
    return main([*ticket, *trainer_args(run_dir, data, spec, level, branch)])


def termination(run_dir: Path, level: int = 0, branch: str = "main") -> str:
    return (run_dir / f"termination-{level}-{branch}").read_text()


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def masks(run_dir: Path, level: int = 0, branch: Branch = "main") -> dict[str, torch.Tensor]:
    return tensors(level_files(run_dir, level, branch).mask)


def start(run_dir: Path, level: int = 0, branch: Branch = "main") -> dict[str, Any]:
    result: dict[str, Any] = json.loads(level_files(run_dir, level, branch).start.read_text())
    return result


def result(run_dir: Path, level: int = 0, branch: Branch = "main") -> dict[str, Any]:
    found: dict[str, Any] = json.loads(level_files(run_dir, level, branch).result.read_text())
    return found


def equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(torch.equal(a[n], b[n]) for n in a)


@pytest.fixture(scope="module")
def source(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-class search: levels 0 and 1 (the ticket: level 1, about 80% dense)."""
    run_dir = tmp_path_factory.mktemp("source")
    for level in (0, 1):
        assert main(trainer_args(run_dir, data_dir, SOURCE, level)) == 0
    return run_dir


@pytest.fixture(scope="module")
def ticket_args(source: Path) -> list[str]:
    return ["--ticket-run-dir", str(source), "--ticket-level", "1"]


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Other target data: 3 classes, 180 train images, 60 val."""
    path = tmp_path_factory.mktemp("three")
    write_shards(path, {"train": pattern_images(3, 180, 16, 2), "val": pattern_images(3, 60, 16, 3)}, 3, 100)
    return path


@pytest.fixture(scope="module")
def kept(data_dir: Path, ticket_args: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ticket with its head on 4 classes: level 0, its three controls, and level 1."""
    run_dir = tmp_path_factory.mktemp("kept")
    spec = transfer_spec(head="keep", controls=["dense", "random-prune", "random-reinit"])
    for level, branch in [(0, "main"), (0, "dense"), (0, "random-prune"), (0, "random-reinit"), (1, "main")]:
        assert train(run_dir, data_dir, spec, ticket_args, level, branch) == 0
    return run_dir


@pytest.fixture(scope="module")
def exported(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source's level 1 as `lth report` exports a ticket: tensors and ticket.json."""
    ticket = tmp_path_factory.mktemp("ticket")
    files = TicketFiles.from_run(source, 1)
    for path in (files.mask, files.rewind, files.final):
        shutil.copy(path, ticket / path.name)
    write_description(ticket, "smallcnn")
    return ticket


def write_description(ticket: Path, arch: str) -> None:
    info = {"run": "source", "level": 1, "architecture": arch, "numClasses": 4, "top1": 90.0}
    described = describe(ticket, {**info, "denseTop1": 91.0, "spec": SOURCE.to_wire()})
    (ticket / TICKET_FILE).write_text(json.dumps(described))


def test_kept_head_trains_the_tickets_mask_from_its_rewind_weights(source: Path, kept: Path) -> None:
    assert equal(masks(kept), masks(source, 1))
    assert result(kept)["density"] == result(source, 1)["density"]
    assert equal(tensors(level_files(kept, 0).init), tensors(level_files(source, 0).rewind))
    begun = start(kept)
    assert begun["step"] == 0 and begun["head"] == "kept from the ticket"
    assert str(level_files(source, 0).rewind) in begun["weights"]
    assert str(level_files(source, 1).mask) in begun["mask"]
    final = tensors(level_files(kept, 0).final)
    assert all(final[n][~keep].abs().max() == 0 for n, keep in masks(kept).items())


def test_final_weights_from_an_exported_ticket_directory(
    source: Path, exported: Path, data_dir: Path, tmp_path: Path
) -> None:
    spec = transfer_spec(path=str(exported), weights="final", head="keep", controls=[])
    assert train(tmp_path, data_dir, spec, ["--ticket-dir", str(exported)]) == 0
    assert equal(tensors(level_files(tmp_path, 0).init), tensors(level_files(source, 1).final))
    assert equal(masks(tmp_path), masks(source, 1))
    assert str(exported / FINAL_FILE) in start(tmp_path)["weights"]


def test_a_ticket_at_a_url_is_downloaded_once_and_checked(
    source: Path, exported: Path, data_dir: Path, tmp_path: Path
) -> None:
    with serving(exported.parent) as url:
        ticket = f"{url}{exported.name}"
        spec = transfer_spec(url=ticket, head="keep", controls=["dense"])
        assert train(tmp_path, data_dir, spec, ["--ticket-url", ticket]) == 0
        downloaded = tmp_path / "source-ticket"
        assert {p.name for p in downloaded.iterdir()} == {p.name for p in exported.iterdir()}
        assert equal(masks(tmp_path), masks(source, 1))
        # A level-0 control (in parallel, or after a restart) fetches only what is missing.
        (downloaded / MASK_FILE).unlink()
        rewind = (downloaded / "rewind.safetensors").stat().st_mtime_ns
        assert train(tmp_path, data_dir, spec, ["--ticket-url", ticket], branch="dense") == 0
        assert (downloaded / MASK_FILE).exists()
        assert (downloaded / "rewind.safetensors").stat().st_mtime_ns == rewind

        (tmp_path / "missing").mkdir()
        assert (
            train(tmp_path / "missing", data_dir, spec, ["--ticket-url", f"{url}nowhere"]) == EXIT_BAD_INPUT
        )
        assert "--ticket-url: " in termination(tmp_path / "missing")
        assert "nowhere/ticket.json: cannot download (HTTP Error 404" in termination(tmp_path / "missing")


def test_reinit_head_for_other_classes_keeps_the_body_and_trains_a_dense_head(
    source: Path, three_classes: Path, ticket_args: list[str], tmp_path: Path
) -> None:
    assert train(tmp_path, three_classes, transfer_spec(controls=[]), ticket_args) == 0
    ticket, mask = masks(source, 1), masks(tmp_path)
    assert all(torch.equal(mask[n], ticket[n]) for n in ticket if n != HEAD)
    assert mask[HEAD].shape == (3, 64) and bool(mask[HEAD].all())
    assert result(tmp_path)["density"] == pytest.approx(pruning.density(mask))
    init, rewind = tensors(level_files(tmp_path, 0).init), tensors(level_files(source, 0).rewind)
    fresh = build_model("smallcnn", 3, 16, SOURCE.training.seed).state_dict()
    for name, tensor in init.items():
        assert torch.equal(tensor, fresh[name] if name.startswith("fc2.") else rewind[name]), name


def test_pruned_new_head_keeps_the_ticket_heads_fraction(
    source: Path, three_classes: Path, ticket_args: list[str], tmp_path: Path
) -> None:
    assert train(tmp_path, three_classes, transfer_spec(prune_head=True, controls=[]), ticket_args) == 0
    ticket, mask = masks(source, 1), masks(tmp_path)
    assert all(torch.equal(mask[n], ticket[n]) for n in ticket if n != HEAD)
    fraction = int(ticket[HEAD].sum()) / ticket[HEAD].numel()
    assert fraction < 1
    assert int(mask[HEAD].sum()) == round(fraction * 3 * 64)
    assert f"{int(mask[HEAD].sum())} of 192" in start(tmp_path)["head"]


def test_controls_dense_random_mask_and_reinit_start_fresh(kept: Path, source: Path) -> None:
    ticket = masks(kept)
    assert result(kept, 0, "dense")["density"] == 1.0
    assert all(bool(m.all()) for m in masks(kept, 0, "dense").values())
    rprune = masks(kept, 0, "random-prune")
    assert {n: int(m.sum()) for n, m in rprune.items()} == {n: int(m.sum()) for n, m in ticket.items()}
    assert not equal(rprune, ticket)
    assert equal(masks(kept, 0, "random-reinit"), ticket)
    seed = SOURCE.training.seed
    assert (
        start(kept, 0, "dense")["weights"]
        == start(kept, 0, "random-prune")["weights"]
        == f"fresh init (seed {seed})"
    )

    def build(s: int) -> torch.nn.Module:
        return build_model("smallcnn", 4, 16, s)

    spec = transfer_spec(head="keep")
    files = TicketFiles.from_run(source, 1)
    reinit = plan_start(kept, spec, 0, "random-reinit", build, 12, write=False, ticket=files).weights
    theta = tensors(level_files(kept, 0).init)
    assert all(not torch.equal(reinit[n], theta[n]) for n in ticket)
    assert all(
        not level_files(kept, 0, b).rewind.exists() for b in ("dense", "random-prune", "random-reinit")
    )
    assert level_files(kept, 0).rewind.exists()


def test_a_continued_level_prunes_from_the_transferred_mask(kept: Path) -> None:
    before, after = masks(kept, 0), masks(kept, 1)
    kept_before = pruning.kept(before)
    assert pruning.kept(after) == kept_before - round(0.2 * kept_before)
    assert all(not (after[n] & ~before[n]).any() for n in after)
    assert result(kept, 1)["density"] == pytest.approx(pruning.density(after))
    begun = start(kept, 1)
    assert begun["weights"] == "levels/00/rewind.safetensors" and begun["step"] == 12


def test_a_kept_head_needs_the_same_class_count(
    three_classes: Path, ticket_args: list[str], tmp_path: Path
) -> None:
    assert train(tmp_path, three_classes, transfer_spec(head="keep"), ticket_args) == EXIT_BAD_INPUT
    message = termination(tmp_path)
    assert "spec.ticket.head" in message and "4 classes" in message and "this run 3" in message


@pytest.mark.parametrize("damage", ["architecture", "checksum", "no-final"])
def test_a_bad_ticket_directory_is_refused_naming_the_file(
    exported: Path, data_dir: Path, tmp_path: Path, damage: str
) -> None:
    ticket = tmp_path / "ticket"
    shutil.copytree(exported, ticket)
    if damage == "architecture":
        write_description(ticket, "resnet18")
    elif damage == "checksum":
        mask = tensors(ticket / MASK_FILE)
        mask["conv1.weight"] = ~mask["conv1.weight"]
        save_file(mask, str(ticket / MASK_FILE))
    else:
        (ticket / FINAL_FILE).unlink()
        write_description(ticket, "smallcnn")
    spec = transfer_spec(path=str(ticket), weights="final", head="keep", controls=[])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert train(run_dir, data_dir, spec, ["--ticket-dir", str(ticket)]) == EXIT_BAD_INPUT
    message = termination(run_dir)
    expected = {
        "architecture": [str(ticket / TICKET_FILE), "resnet18", "smallcnn"],
        "checksum": [str(ticket / MASK_FILE), "checksum"],
        "no-final": [str(ticket / FINAL_FILE), "spec.ticket.weights final"],
    }[damage]
    assert all(part in message for part in expected), message
    assert not level_files(run_dir, 0).mask.exists()


def test_ticket_flags_go_with_spec_ticket(data_dir: Path, ticket_args: list[str], tmp_path: Path) -> None:
    transfer = transfer_spec()
    assert train(tmp_path, data_dir, transfer, []) == EXIT_BAD_INPUT
    assert "--ticket-run-dir" in termination(tmp_path)
    assert train(tmp_path, data_dir, SOURCE, ticket_args) == EXIT_BAD_INPUT
    assert "--ticket-run-dir" in termination(tmp_path) and "spec.ticket" in termination(tmp_path)
    assert (
        train(tmp_path, data_dir, transfer, [*ticket_args, "--ticket-dir", str(tmp_path)]) == EXIT_BAD_INPUT
    )
    assert "not both" in termination(tmp_path)
    assert train(tmp_path, data_dir, transfer, ticket_args, 1, "dense") == EXIT_BAD_INPUT
    assert "--branch dense" in termination(tmp_path, 1, "dense")
