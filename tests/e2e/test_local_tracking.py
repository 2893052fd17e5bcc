"""`lth run` with spec.tracking.mlflow against a real MLflow server: one parent run, a nested
run per level and branch with its parameters and per-epoch metrics, the ticket and report as
the parent's artifacts; found again, never duplicated, by a second export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from lth.storage.files import read_progress
from tests.tiny import TINY_TRAINING
from tests.trainer.shards import pattern_images, write_shards

pytestmark = pytest.mark.slow

NAME = "tracked"


def lth(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "lth", *args]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, check=False, timeout=300)


def experiment_runs(client: MlflowClient, experiment: str) -> tuple[Run, dict[str, Run]]:
    """The experiment's one parent run, and its nested runs by name."""
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    runs = client.search_runs([found.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    parent = parents[0].info.run_id
    nested = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent}
    assert len(nested) == len(runs) - 1
    return parents[0], nested


def top1_steps(client: MlflowClient, run: Run) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/top1")]


@pytest.fixture(scope="module")
def tracked(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A search of level 0, level 1 and its random-prune control, tracked in MLflow."""
    root = tmp_path_factory.mktemp("storage")
    splits = {"train": pattern_images(4, 240, 16, 0), "val": pattern_images(4, 80, 16, 1)}
    write_shards(root / "shards", splits, 4, 100)
    experiment = f"lth-e2e-{root.name}"
    run: dict[str, Any] = {
        "apiVersion": "lth.dev/v1alpha1",
        "kind": "LotteryTicketRun",
        "metadata": {"name": NAME},
        "spec": {
            "dataset": {"format": "prepared", "path": "shards", "imageSize": 16},
            "model": {"arch": "smallcnn"},
            "training": {**TINY_TRAINING, "batchSize": 20},
            "pruning": {
                "levels": 1,
                "rewindTo": "1ep",
                "matchTolerance": 100,
                "controls": {"branches": ["random-prune"]},
            },
            "resources": {"gpusPerPod": 0},
            "tracking": {"mlflow": {"trackingUri": mlflow_server, "experimentName": experiment}},
        },
    }
    (root / "run.yaml").write_text(yaml.safe_dump(run))
    done = lth(root, "run", "run.yaml", "--root", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    export_log = " ".join((root / "runs" / NAME / "logs" / f"{NAME}-export.log").read_text().split())
    assert f"MLflow at {mlflow_server}: ticket and report logged to run" in export_log
    return root, experiment


def test_lth_run_logs_a_parent_and_a_nested_run_per_level_and_branch(
    tracked: tuple[Path, str], mlflow_server: str
) -> None:
    root, experiment = tracked
    client = MlflowClient(mlflow_server)
    parent, nested = experiment_runs(client, experiment)
    assert (parent.info.run_name, parent.info.status, parent.data.tags["lth.run"]) == (NAME, "FINISHED", NAME)
    status = json.loads((root / "runs" / NAME / "status.json").read_text())
    assert parent.data.metrics["best/top1"] == status["best"]["top1"]
    assert parent.data.params["training.optimizer"] == "adam" and parent.data.params["pruning.levels"] == "1"

    assert sorted(nested) == ["00-main", "01-main", "01-random-prune"]
    for name, run in nested.items():
        level, branch = int(name[:2]), name[3:]
        directory = "levels/" + f"{level:02d}" + ("-rprune" if branch == "random-prune" else "")
        records = read_progress(root / "runs" / NAME / directory / "progress.jsonl")
        assert top1_steps(client, run) == [(r["epoch"], r["top1"]) for r in records], name
        assert [r["epoch"] for r in records] == ([1, 2] if level == 0 else [2])  # the global epoch
        assert run.info.status == "FINISHED"
        assert (run.data.params["level"], run.data.params["branch"]) == (str(level), branch)
        expected = {"train/loss", "train/lr", "train/images_per_second", "val/loss", "density"}
        assert expected <= set(run.data.metrics)
    assert nested["01-main"].data.metrics["density"] == pytest.approx(0.8, abs=1e-3)


def test_the_ticket_and_report_are_the_parent_runs_artifacts(
    tracked: tuple[Path, str], mlflow_server: str, tmp_path: Path
) -> None:
    root, experiment = tracked
    client = MlflowClient(mlflow_server)
    parent, _ = experiment_runs(client, experiment)
    logged = {Path(f.path).name for f in client.list_artifacts(parent.info.run_id, "ticket")}
    exported = root / "runs" / NAME / "ticket"
    assert logged == {p.name for p in exported.iterdir()}
    assert {"ticket.json", "mask.safetensors", "learning-curves.png", "README.md"} <= logged
    copy = client.download_artifacts(parent.info.run_id, "ticket/ticket.json", str(tmp_path))
    assert Path(copy).read_bytes() == (exported / "ticket.json").read_bytes()


def test_a_second_export_finds_the_runs_again_and_sends_only_what_they_lack(
    tracked: tuple[Path, str], mlflow_server: str
) -> None:
    """As a retried export Job would: no second parent, no step twice; a level's run that the
    server lost (deleted here) is made again with all its epochs, and a parent whose id the
    run directory lost is found by its key."""
    root, experiment = tracked
    client = MlflowClient(mlflow_server)
    parent, nested = experiment_runs(client, experiment)
    client.delete_run(nested["01-random-prune"].info.run_id)
    record_file = root / "runs" / NAME / "tracking" / "mlflow-parent.json"
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({"key": record["key"]}))  # as if the reply with the id was lost

    again = lth(root, "report", f"runs/{NAME}")
    assert again.returncode == 0, again.stderr
    assert "ticket and report logged to run" in again.stdout
    assert again.stdout.rstrip().endswith(", with 1 epoch the levels had not sent")
    parent_again, nested_again = experiment_runs(client, experiment)
    assert parent_again.info.run_id == parent.info.run_id
    assert nested_again["00-main"].info.run_id == nested["00-main"].info.run_id
    assert top1_steps(client, nested_again["00-main"]) == top1_steps(client, nested["00-main"])
    remade = nested_again["01-random-prune"]
    assert remade.info.run_id != nested["01-random-prune"].info.run_id
    assert [step for step, _ in top1_steps(client, remade)] == [2]
