"""rewindTo auto end to end with `lth run` and the real trainer, on tiny prepared shards: level 0,
the instability analysis' copies and path, a kill in the middle of it and the rerun that goes on
where it stopped, the levels rewound to the chosen point, and the table in `lth status`, the
model card, the plot and ticket.json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.tiny import TINY_TRAINING
from tests.trainer.shards import pattern_images, write_shards

RUN: dict[str, Any] = {
    "apiVersion": "lth.dev/v1alpha1",
    "kind": "LotteryTicketRun",
    "metadata": {"name": "auto"},
    "spec": {
        "dataset": {"format": "prepared", "path": "data", "imageSize": 16},
        "model": {"arch": "smallcnn"},
        "training": {**TINY_TRAINING, "batchSize": 20, "lr": 0.002},
        "pruning": {
            "levels": 1,
            "rewindTo": "auto",
            "stability": {"points": [0.5], "interpolationPoints": 5},
        },
        "resources": {"gpusPerPod": 0},
    },
}
"""2 epochs of 12 steps; one candidate point, half an epoch in (step 6)."""


def lth(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lth", *args], cwd=root, capture_output=True, text=True, check=False
    )


def test_rewind_to_auto_runs_through_lth_run_resumes_mid_analysis_and_reports_its_table(
    tmp_path: Path,
) -> None:
    write_shards(
        tmp_path / "data",
        {"train": pattern_images(4, 240, 16, 0), "val": pattern_images(4, 80, 16, 1)},
        4,
        100,
    )
    (tmp_path / "auto.yaml").write_text(yaml.safe_dump(RUN))
    run_dir = tmp_path / "runs" / "auto"
    copy_a = run_dir / "stability" / "00-a" / "result.json"
    # The first `lth run`, killed once copy a is done (copy b then runs, or is about to).
    first = subprocess.Popen(
        [sys.executable, "-m", "lth", "run", "auto.yaml", "--root", str(tmp_path)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not copy_a.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert copy_a.exists(), "copy a did not finish"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    done = lth(tmp_path, "run", "auto.yaml", "--root", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr

    status = json.loads((run_dir / "status.json").read_text())
    assert status["phase"] == "Succeeded"
    stability = status["stability"]
    assert stability["chosen"]["rewindTo"] == "0.5ep" and stability["chosen"]["step"] == 6
    assert len(stability["points"][0]["errors"]) == 5
    # Copy a ran once: the rerun found its result and did not train it again.
    log = (run_dir / "logs" / "auto-stability-00-a.log").read_text()
    assert log.count(" attempt 1:") == 1
    levels = run_dir / "levels"
    assert (levels / "00" / "rewind.safetensors").read_bytes() == (
        levels / "00" / "rewind-at-6.safetensors"
    ).read_bytes()
    assert json.loads((levels / "01" / "start.json").read_text())["step"] == 6

    shown = lth(tmp_path, "status", "runs/auto")
    assert "instability analysis (rewindTo auto)" in shown.stdout
    assert "rewind point 0.5ep, step 6" in " ".join(shown.stdout.split())
    ticket = run_dir / "ticket"
    card = (ticket / "README.md").read_text()
    assert "## Rewind point: instability analysis" in card and "| 0.5 (chosen) | 6 |" in card
    assert (ticket / "stability.png").stat().st_size > 10_000
    described = json.loads((ticket / "ticket.json").read_text())
    assert described["rewindPoint"]["rewindTo"] == "0.5ep"
    assert described["cost"]["stability"] == stability["cost"] > 0
