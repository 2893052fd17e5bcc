"""The local runner's loop with stand-in workloads: resume, retries, lock, report.

The real Spark job and trainer are exercised end to end elsewhere; here the
children are tiny scripts that write the same outputs (manifest.json,
result.json), so the loop's behaviour is tested in seconds.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from lth.api import RunSpec, RunStatus
from lth.local.executor import LocalExecutor, RunError
from lth.local.runner import Display, run_local, run_lock
from lth.results.export import write_report

FAKE_CHILD = textwrap.dedent(
    '''
    """Stands in for the Spark job and the trainer: writes their outputs."""
    import json, os, pathlib, sys, time
    kind, out = sys.argv[1], pathlib.Path(sys.argv[2])
    level = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    control = pathlib.Path(os.environ["FAKE_CONTROL"])
    rules = json.loads(control.read_text()) if control.exists() else {}
    with open(control.parent / "launches.log", "a") as log:
        log.write(f"{kind} {out.name}\\n")
    (control.parent / f"pid-{out.name}").write_text(str(os.getpid()))
    name = out.name
    failures = control.parent / f"failures-{name}"
    if rules.get("fail", {}).get(name, 0) > (int(failures.read_text()) if failures.exists() else 0):
        failures.write_text(str((int(failures.read_text()) if failures.exists() else 0) + 1))
        print(f"CUDA error: out of memory in {name}", flush=True)
        sys.exit(3)
    if name in rules.get("bad", []):
        print(f"{name}/mask.safetensors: truncated", flush=True)
        sys.exit(2)
    if kind == "level":
        epoch = {"level": level, "branch": sys.argv[4], "epoch": 1, "epochs": 2, "top1": 55.5,
                 "imagesPerSecond": 321.0, "time": time.time(), "etaSeconds": 60}
        print("lth-progress " + json.dumps(epoch), flush=True)
    time.sleep(rules.get("sleep", {}).get(name, 0))
    out.mkdir(parents=True, exist_ok=True)
    if kind == "prep":
        (out / "manifest.json").write_text("{}")
    else:
        branch = sys.argv[4]
        top1 = 90.0 - level if branch == "main" else 80.0 - 2 * level
        result = {"level": level, "branch": branch, "density": 0.8 ** level, "top1": top1}
        import numpy as np
        from safetensors.numpy import save_file
        save_file({"fc.weight": np.arange(10) < 10 * 0.8 ** level}, str(out / "mask.safetensors"))
        save_file({"fc.weight": np.ones(10, dtype=np.float32)}, str(out / "final.safetensors"))
        if level == 0:
            save_file({"fc.weight": np.zeros(10, dtype=np.float32)}, str(out / "rewind.safetensors"))
        (out / "result.json").write_text(json.dumps(result))
    '''
)


class FakeExecutor(LocalExecutor):
    """Runs the stand-in script instead of spark-submit and torchrun."""

    def _prep_launch(self, spec: RunSpec) -> Any:
        launch = super()._prep_launch(spec)
        argv = [sys.executable, str(self.storage_root / "fake_child.py"), "prep", self.paths.data_dir(spec)]
        return type(launch)(launch.name, argv, launch.log, launch.env)

    def _level_launch(self, spec: RunSpec, status: RunStatus, name: str, level: int, branch: Any) -> Any:
        launch = super()._level_launch(spec, status, name, level, branch)
        out = self.layout.level_dir(level, branch)
        argv = [
            sys.executable,
            str(self.storage_root / "fake_child.py"),
            "level",
            str(out),
            str(level),
            branch,
        ]
        return type(launch)(launch.name, argv, launch.log, launch.env, level, branch)


SPEC = {
    "apiVersion": "lth.dev/v1alpha1",
    "kind": "LotteryTicketRun",
    "metadata": {"name": "tiny"},
    "spec": {
        "dataset": {"format": "imagefolder", "path": "input"},
        "training": {"epochs": 2, "batchSize": 8, "milestones": [], "warmupEpochs": 0},
        "pruning": {"levels": 3, "rewindTo": "0", "controls": {"branches": ["random-reinit"], "levels": [2]}},
        "resources": {"gpusPerPod": 0},
        "retry": {"training": {"backoffLimit": 1}},
    },
}


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "fake_child.py").write_text(FAKE_CHILD)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(SPEC))
    monkeypatch.setenv("FAKE_CONTROL", str(tmp_path / "control.json"))
    return tmp_path


def control(root: Path, **rules: Any) -> None:
    (root / "control.json").write_text(json.dumps(rules))


def launches(root: Path) -> list[str]:
    path = root / "launches.log"
    return path.read_text().splitlines() if path.exists() else []


def executor(root: Path) -> FakeExecutor:
    return FakeExecutor.from_file(root / "run.yaml", root, 1)  # type: ignore[return-value]


def test_runs_every_child_once_and_reports(root: Path) -> None:
    status = run_local(executor(root), Display())
    assert status.phase == "Succeeded"
    assert launches(root) == [
        "prep data",
        "level 00",
        "level 01",
        "level 02",
        "level 03",
        "level 02-reinit",
    ]
    assert status.best is not None and status.best.level == 1  # 89 is within 1 point of 90
    # The run's last stage, as on a cluster: `lth report` on the run directory.
    assert status.export is not None and status.export.phase == "Succeeded"
    assert status.export.path == "runs/tiny/ticket"
    assert status.condition("Exported").status == "True"  # type: ignore[union-attr]
    ticket = root / "runs" / "tiny" / "ticket"
    card = (ticket / "README.md").read_text()
    assert "| 2 | 64.00% | 88.00 | 76.00 |" in card
    assert (ticket / "accuracy.png").stat().st_size > 10_000


@dataclass
class RecordingExecutor(FakeExecutor):
    """Records the Create actions of every plan and every process started."""

    creates: list[tuple[str, int]] = field(default_factory=list)
    starts: list[tuple[str, int]] = field(default_factory=list)

    def step(self, status: RunStatus | None) -> Any:
        result = super().step(status)
        self.creates += [(a.name, a.attempt) for a in result.creates]
        return result

    def start(self, launch: Any, attempt: int) -> None:
        self.starts.append((launch.name, attempt))
        super().start(launch, attempt)


def test_the_runner_starts_exactly_the_plans_create_actions(root: Path) -> None:
    control(root, fail={"01": 1})
    recording = RecordingExecutor.from_file(root / "run.yaml", root, 1)
    assert isinstance(recording, RecordingExecutor)
    assert run_local(recording, Display()).phase == "Succeeded"
    assert recording.starts == recording.creates
    assert ("tiny-level-01", 2) in recording.starts  # the retry


def test_the_trainer_gets_the_specs_environment_as_on_a_cluster(root: Path) -> None:
    spec = copy.deepcopy(SPEC)
    spec["spec"]["resources"]["env"] = {"NCCL_DEBUG": "INFO"}
    (root / "run.yaml").write_text(yaml.safe_dump(spec))
    runner = executor(root)
    status = run_local(runner, Display())
    level = runner._level_launch(RunSpec.model_validate(spec["spec"]), status, "tiny-level-00", 0, "main")
    assert level.env["NCCL_DEBUG"] == "INFO"


def test_rerun_of_a_finished_run_does_nothing(root: Path) -> None:
    run_local(executor(root), Display())
    first = launches(root)
    status = run_local(executor(root), Display())
    assert status.phase == "Succeeded" and launches(root) == first


def test_a_failed_child_is_retried_then_the_run_fails_with_its_log(root: Path) -> None:
    control(root, fail={"01": 1})
    assert run_local(executor(root), Display()).phase == "Succeeded"
    assert launches(root).count("level 01") == 2

    other = root / "again"
    other.mkdir()
    (other / "fake_child.py").write_text(FAKE_CHILD)
    (other / "run.yaml").write_text(yaml.safe_dump(SPEC))
    (root / "control.json").write_text(json.dumps({"fail": {"02": 5}}))
    (other / "control.json").write_text(json.dumps({"fail": {"02": 5}}))
    with pytest.raises(RunError) as error:
        run_local(executor(root).__class__.from_file(other / "run.yaml", other, 1), Display())
    assert "tiny-level-02" in str(error.value) and "CUDA error: out of memory" in str(error.value)


DRIVER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from test_local import FakeExecutor
    from lth.local.runner import Display, run_local
    root = Path({root!r})
    try:
        run_local(FakeExecutor.from_file(root / "run.yaml", root, 1), Display())
    except KeyboardInterrupt:
        sys.exit(130)
    """
)


def test_a_child_that_reports_bad_input_is_not_retried(root: Path) -> None:
    control(root, bad=["01"])
    with pytest.raises(RunError, match=r"failed on its input \(not retried\): bad input;") as failure:
        run_local(executor(root), Display())
    assert "01/mask.safetensors: truncated" in str(failure.value)
    assert launches(root).count("level 01") == 1


def test_interrupted_run_resumes_without_redoing_finished_levels(root: Path) -> None:
    control(root, sleep={"02": 30})
    driver = root / "driver.py"
    driver.write_text(DRIVER.format(tests=str(Path(__file__).parent), root=str(root)))
    process = subprocess.Popen([sys.executable, str(driver)], cwd=root)
    deadline = time.monotonic() + 60
    while "level 02" not in launches(root):
        assert time.monotonic() < deadline, "level 02 never started"
        time.sleep(0.1)
    level_01 = root / "runs" / "tiny" / "levels" / "01" / "result.json"
    finished_at = level_01.stat().st_mtime_ns
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 130
    assert not (root / "runs" / "tiny" / "levels" / "02" / "result.json").exists()

    control(root)
    status = run_local(executor(root), Display())
    assert status.phase == "Succeeded"
    assert launches(root).count("level 00") == 1 and launches(root).count("level 01") == 1
    assert launches(root).count("level 02") == 2  # started again: the trainer resumes it
    assert level_01.stat().st_mtime_ns == finished_at


def test_a_runner_killed_outright_takes_its_children_with_it(root: Path) -> None:
    """SIGKILL leaves the runner no chance to stop its children: the kernel does (PR_SET_PDEATHSIG)."""
    control(root, sleep={"02": 60})
    driver = root / "driver.py"
    driver.write_text(DRIVER.format(tests=str(Path(__file__).parent), root=str(root)))
    process = subprocess.Popen([sys.executable, str(driver)], cwd=root)
    deadline = time.monotonic() + 60
    while "level 02" not in launches(root) or not (root / "pid-02").exists():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    child = int((root / "pid-02").read_text())
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the level's process outlived its runner"

    control(root)
    status = run_local(executor(root), Display())
    assert status.phase == "Succeeded"
    assert launches(root).count("level 02") == 2 and launches(root).count("level 01") == 1


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_second_runner_on_the_same_directory_is_refused(root: Path) -> None:
    run_dir = root / "runs" / "tiny"
    with run_lock(run_dir), pytest.raises(RunError, match="in use"):
        run_local(executor(root), Display())


def test_invalid_spec_file_names_the_file_and_field(root: Path) -> None:
    broken = {**SPEC, "spec": {**SPEC["spec"], "pruning": {"fraction": 2}}}
    (root / "bad.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(RunError, match=r"bad.yaml: spec.pruning.fraction"):
        LocalExecutor.from_file(root / "bad.yaml", root, 1)


def transfer_run(root: Path, source: str) -> FakeExecutor:
    spec = copy.deepcopy(SPEC)
    spec["metadata"]["name"] = "moved"
    spec["spec"]["ticket"] = {"run": source, "level": 1}
    spec["spec"]["pruning"] = {"rewindTo": "0"}
    (root / "moved.yaml").write_text(yaml.safe_dump(spec))
    return FakeExecutor.from_file(root / "moved.yaml", root, 1)  # type: ignore[return-value]


def test_a_transfer_run_trains_the_ticket_beside_its_controls_and_reports_them(root: Path) -> None:
    run_local(executor(root), Display())
    status = run_local(transfer_run(root, "tiny"), Display())

    assert status.phase == "Succeeded"
    assert status.ticket is not None and status.ticket.source == "run tiny level 1"
    assert launches(root)[-4:] == ["prep data", "level 00", "level 00-dense", "level 00-rprune"]
    ticket = write_report(root / "runs" / "moved", status)
    card = (ticket / "README.md").read_text()
    assert "Transfer run: the ticket of run tiny level 1" in card
    assert "| top-1 transferred ticket | top-1 dense, fresh init | top-1 random mask" in card

    # The trainer is pointed at the source run's level (the stand-in above ignores it).
    real = LocalExecutor.from_file(root / "moved.yaml", root, 1)
    spec = status.accepted_spec
    assert spec is not None
    argv = real._level_launch(spec, status, "moved-level-00", 0, "main").argv
    source_dir = str((root / "runs" / "tiny").resolve())
    assert argv[argv.index("--ticket-run-dir") + 1] == source_dir
    assert argv[argv.index("--ticket-level") + 1] == "1"


def test_a_transfer_from_a_missing_run_fails_naming_it_and_starts_nothing(root: Path) -> None:
    with pytest.raises(RunError, match=r"LotteryTicketRun 'nowhere' \(spec.ticket.run\) does not exist"):
        run_local(transfer_run(root, "nowhere"), Display())
    assert launches(root) == []


def test_a_failed_export_leaves_the_search_succeeded_and_names_the_cause(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = copy.deepcopy(SPEC)
    spec["spec"]["pruning"] = {"levels": 0, "rewindTo": "0"}
    spec["spec"]["export"] = {"url": "s3://tickets/tiny", "endpointUrl": "http://127.0.0.1:9"}
    spec["spec"]["retry"]["export"] = {"backoffLimit": 0}
    (root / "run.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    status = run_local(executor(root), Display())
    assert status.phase == "Succeeded" and status.condition("Failed") is None
    assert status.export is not None and status.export.phase == "Failed"
    exported = status.condition("Exported")
    assert exported is not None and exported.reason == "ExportFailed"
    assert "http://127.0.0.1:9" in exported.message  # the endpoint it could not reach
    assert (root / "runs" / "tiny" / "ticket" / "README.md").exists()  # written before the upload


def test_a_running_level_shows_its_epoch_in_the_status_file(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lth.local.runner.PROGRESS_SECONDS", 0.2)
    control(root, sleep={"01": 30})
    runner = threading.Thread(target=run_local, args=(executor(root), Display()), daemon=True)
    runner.start()
    status_file = root / "runs" / "tiny" / "status.json"
    deadline = time.monotonic() + 60
    seen = None
    while time.monotonic() < deadline and seen is None:
        time.sleep(0.2)
        status = RunStatus.model_validate_json(status_file.read_text()) if status_file.exists() else None
        row = status.level_entry(1) if status else None
        if status is not None and row is not None and row.progress is not None:
            seen = status
    assert seen is not None, "no progress in status.json while level 1 ran"
    row = seen.level_entry(1)
    assert row is not None and row.progress is not None
    assert (row.progress.epoch, row.progress.epochs, row.progress.top1) == (1, 2, 55.5)
    assert seen.progress == "L1 1/2"
    control(root)  # the rest runs without sleeping
    for pid_file in root.glob("pid-01"):
        os.kill(int(pid_file.read_text()), signal.SIGTERM)  # level 1 fails once, then is retried
    runner.join(timeout=120)
    final = RunStatus.model_validate_json(status_file.read_text())
    assert final.progress is None and all(row.progress is None for row in final.levels)


def test_the_export_uploads_the_ticket_that_fetch_brings_back_verified(
    root: Path, s3: Any, tmp_path: Path
) -> None:
    from lth.storage.objectstore import fetch_ticket

    spec = copy.deepcopy(SPEC)
    spec["spec"]["export"] = {"url": "s3://tickets/runs/tiny"}
    (root / "run.yaml").write_text(yaml.safe_dump(spec))
    status = run_local(executor(root), Display())
    assert status.export is not None and (status.export.phase, status.export.url) == (
        "Succeeded",
        "s3://tickets/runs/tiny",
    )
    fetched = fetch_ticket("s3://tickets/runs/tiny", tmp_path / "fetched")
    exported = root / "runs" / "tiny" / "ticket"
    assert sorted(p.name for p in fetched.iterdir()) == sorted(p.name for p in exported.iterdir())
    for path in exported.iterdir():
        assert (fetched / path.name).read_bytes() == path.read_bytes(), path.name
