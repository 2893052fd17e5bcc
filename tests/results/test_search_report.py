"""The gradual search through the local runner (stand-in children), and its cost in the
report, ticket.json and `lth status`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file

from lth.cli import main as lth_main
from lth.local.runner import Display, run_local
from lth.results.export import write_report
from tests.local.test_local import SPEC, executor, launches
from tests.local.test_local import root as root


def gradual(root: Path) -> None:
    doc = copy.deepcopy(SPEC)
    doc["spec"]["pruning"] = {
        "rewindTo": "0",
        "matchTolerance": 5,
        "search": {"method": "gradual", "densities": [0.5, 0.2], "epochs": 1},
        "controls": {"branches": ["random-reinit"]},
    }
    (root / "run.yaml").write_text(yaml.safe_dump(doc))


def test_lth_run_drives_the_gradual_search_and_reports_its_cost(
    root: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gradual(root)
    status = run_local(executor(root), Display())
    assert status.phase == "Succeeded"
    assert launches(root) == [
        "prep data", "level 00", "level 01", "level 02", "level 03", "level 02-reinit", "level 03-reinit"
    ]  # fmt: skip
    assert status.best is not None and status.best.level == 3
    # 2 epochs a run: dense 1, search 1 epoch = 0.5, each ticket and control 1 (rewind to 0)
    assert status.cost is not None
    assert (status.cost.search, status.cost.controls, status.cost.ticket) == (3.5, 2.0, 2.5)
    assert [e.cost for e in status.levels if e.branch == "main"] == [1.0, 0.5, 1.0, 1.0]

    run_dir = root / "runs" / "tiny"
    save_file(
        {"conv.weight": np.ones((2, 2), dtype=bool)}, str(run_dir / "levels" / "03" / "mask.safetensors")
    )
    save_file(
        {"conv.weight": np.ones((2, 2), np.float32)}, str(run_dir / "levels" / "00" / "rewind.safetensors")
    )
    ticket = write_report(run_dir, status)
    card = (ticket / "README.md").read_text()
    assert "| 1 (search) | 80.00% |" in card and "| 3 | 51.20% |" in card  # the stand-in: 0.8 ** level
    assert "cost in dense-run equivalents (gradual search): best ticket 2.50, all main levels 3.50" in card
    described = json.loads((ticket / "ticket.json").read_text())
    assert described["cost"] == {
        "unit": "dense-run equivalents", "search": 3.5, "controls": 2.0, "ticket": 2.5
    }  # fmt: skip

    capsys.readouterr()
    assert lth_main(["status", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "cost in dense-run equivalents (gradual search): best ticket 2.50" in out and "1 (search)" in out


def test_every_search_method_has_an_entry_with_words_for_the_model_card() -> None:
    from typing import get_args

    from lth.api import SearchMethod
    from lth.api.search import METHODS

    assert set(METHODS) == set(get_args(SearchMethod))
    assert all(method.words for method in METHODS.values())
