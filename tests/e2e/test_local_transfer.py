"""Transfer end to end with `lth run`: a ticket found on the digits 0-4 trained on 5-9.

Real Spark preprocessing and the real trainer, tiny settings: what is checked is
what a user relies on (the mask carried over bit for bit, the controls, the
report), not accuracy.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lth.storage.tickets import mask_densities
from tests.tiny import TINY_TRAINING

CLASSES = [f"n{i:08d}" for i in range(10)]

SEARCH: dict[str, Any] = {
    "apiVersion": "lth.dev/v1alpha1",
    "kind": "LotteryTicketRun",
    "metadata": {"name": "digits-low"},
    "spec": {
        "dataset": {"format": "imagenet", "path": "digits", "imageSize": 28, "classes": CLASSES[:5]},
        "preprocessing": {"shardSizeMb": 1},
        "model": {"arch": "smallcnn"},
        "training": {**TINY_TRAINING, "batchSize": 50, "seed": 1},
        "pruning": {"levels": 1, "rewindTo": "0", "matchTolerance": 100},
        "resources": {"gpusPerPod": 0},
    },
}


def transfer(name: str, ticket: dict[str, Any], **dataset: Any) -> dict[str, Any]:
    run = copy.deepcopy(SEARCH)
    run["metadata"]["name"] = name
    run["spec"]["ticket"] = ticket
    run["spec"]["pruning"] = {"rewindTo": "0"}
    run["spec"]["dataset"].update(classes=CLASSES[5:], **dataset)
    return run


def lth(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lth", *args], cwd=root, capture_output=True, text=True, check=False
    )


def run(root: Path, document: dict[str, Any]) -> dict[str, Any]:
    name = document["metadata"]["name"]
    (root / f"{name}.yaml").write_text(yaml.safe_dump(document))
    done = lth(root, "run", f"{name}.yaml", "--root", str(root))
    status: dict[str, Any] = json.loads((root / "runs" / name / "status.json").read_text())
    status["output"], status["returncode"] = done.stdout + done.stderr, done.returncode
    return status


@pytest.fixture(scope="module")
def storage(digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A storage root where the search on the digits 0-4 has finished."""
    root = tmp_path_factory.mktemp("storage")
    (root / "digits").symlink_to(digits)
    status = run(root, SEARCH)
    assert status["phase"] == "Succeeded", status["output"]
    assert status["best"]["level"] == 1
    return root


def test_a_ticket_from_the_digits_0_to_4_transfers_to_5_to_9_with_its_controls(storage: Path) -> None:
    status = run(storage, transfer("digits-high", {"run": "digits-low", "head": "keep"}))
    assert status["phase"] == "Succeeded", status["output"]

    source = storage / "runs" / "digits-low" / "levels" / "01" / "mask.safetensors"
    moved = storage / "runs" / "digits-high" / "levels" / "00" / "mask.safetensors"
    assert mask_densities(moved) == mask_densities(source)
    rows = {row["branch"]: row for row in status["levels"]}
    assert set(rows) == {"main", "dense", "random-prune"}
    assert status["ticket"]["source"] == "run digits-low level 1"
    assert rows["main"]["density"] == status["ticket"]["density"] == pytest.approx(0.8, abs=0.001)
    assert rows["random-prune"]["density"] == rows["main"]["density"]
    assert rows["dense"]["density"] == 1.0
    assert status["denseTop1"] == rows["dense"]["top1"]
    assert all(row["top1"] > 20 for row in rows.values())  # 5 classes: chance is 20 %

    report = lth(storage, "report", "runs/digits-high")
    assert report.returncode == 0, report.stderr
    assert "transfer of the ticket of run digits-low level 1" in report.stdout
    card = (storage / "runs" / "digits-high" / "ticket" / "README.md").read_text()
    assert "| top-1 transferred ticket | top-1 dense, fresh init | top-1 random mask" in card
    assert (storage / "runs" / "digits-high" / "ticket" / "accuracy.png").stat().st_size > 10_000


def test_an_exported_ticket_directory_transfers_and_a_corrupt_one_is_refused(storage: Path) -> None:
    assert lth(storage, "report", "runs/digits-low").returncode == 0
    exported = storage / "runs" / "digits-low" / "ticket"
    described = json.loads((exported / "ticket.json").read_text())
    assert set(described["files"]) == {"mask.safetensors", "rewind.safetensors", "final.safetensors"}
    assert [(r["level"], r["branch"]) for r in described["results"]] == [(0, "main"), (1, "main")]

    # A fresh head pruned to the ticket head's density; the source's shards spare a Spark job.
    ticket = {"path": "runs/digits-low/ticket", "weights": "final", "pruneHead": True, "controls": []}
    document = transfer("from-dir", ticket)
    document["spec"]["dataset"] = {"format": "prepared", "path": "runs/digits-low/data", "imageSize": 28}
    status = run(storage, document)
    assert status["phase"] == "Succeeded", status["output"]
    assert status["ticket"]["density"] == described["density"]
    assert status["levels"][0]["density"] == pytest.approx(described["density"], abs=0.01)

    corrupt = storage / "corrupt"
    corrupt.mkdir()
    for path in exported.iterdir():
        (corrupt / path.name).write_bytes(path.read_bytes())
    mask = bytearray((corrupt / "mask.safetensors").read_bytes())
    mask[-1] ^= 1
    (corrupt / "mask.safetensors").write_bytes(bytes(mask))
    status = run(storage, transfer("from-corrupt", {"path": "corrupt"}))
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["reason"], status["levels"]) == ("TicketInvalid", [])
    assert "mask.safetensors: checksum mismatch" in failed["message"]
    assert status["returncode"] == 1 and "checksum mismatch" in " ".join(status["output"].split())

    other = json.loads((exported / "ticket.json").read_text())
    (corrupt / "mask.safetensors").write_bytes((exported / "mask.safetensors").read_bytes())
    (corrupt / "ticket.json").write_text(json.dumps({**other, "architecture": "resnet18"}))
    status = run(storage, transfer("from-resnet", {"path": "corrupt"}))
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "TicketMismatch"
    assert "is a resnet18 ticket, but spec.model.arch is smallcnn" in failed["message"]
