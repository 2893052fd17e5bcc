"""The local executor: the planner's actions carried out on one machine.

The Spark job runs under spark-submit in local mode and each level under
torchrun, as subprocesses, one at a time. A child "exists" here when the
status says it was created; it is finished when its outputs exist
(data/manifest.json, levels/NN/result.json). All state is in the run
directory, so Ctrl-C and a rerun go on where the run stopped: an unfinished
child is started again and resumes from its own checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, assert_never

from lth.api import LotteryTicketRun, RunSpec, RunStatus, TicketSpec, workload
from lth.api.naming import MANIFEST_FILE, export_name, prep_name
from lth.api.observed import ObservedChild, ObservedSource
from lth.api.validation import parse_spec
from lth.api.workload import (
    BAD_INPUT,
    EXIT_BAD_INPUT,
    SPARK_MODULE,
    TRAINER_MODULE,
    RunPaths,
    chosen_rewind,
    prep_arguments,
    stability_arguments,
    trainer_arguments,
)
from lth.plan import (
    Create,
    CreateExport,
    CreateLevelJob,
    CreatePreprocessing,
    CreateStabilityJob,
    DeleteChild,
    EmitEvent,
    Plan,
    plan,
    record_progress,
    ticket_to_resolve,
)
from lth.storage import files
from lth.storage.lifetime import start_with_parent_death

LOG_TAIL_LINES = 25


class RunError(Exception):
    """A local run cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Launch:
    """One child's process: what to run and where its log goes."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str]
    level: int | None = None
    branch: str | None = None


@dataclass
class Outcome:
    attempt: int
    returncode: int
    log_tail: str


@dataclass
class Running:
    launch: Launch
    attempt: int
    process: subprocess.Popen[bytes]
    log: IO[bytes]


def _read_text(path: Path) -> str:
    """A child's log or termination message, stripped; empty when there is none."""
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _tail(path: Path, size: int = 16384) -> str:
    """The end of a growing log, without reading it whole."""
    try:
        with path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - size))
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(_read_text(path).splitlines()[-lines:])


def load_run(spec_file: Path) -> tuple[LotteryTicketRun, dict[str, Any]]:
    """The run document from a YAML file, with its raw spec for the planner."""
    try:
        documents = files.read_yaml(spec_file)
    except files.UnreadableDocument as error:
        raise RunError(str(error)) from None
    if len(documents) != 1:
        raise RunError(f"{spec_file}: holds {len(documents)} documents, `lth run` takes one LotteryTicketRun")
    document = documents[0]
    from lth.api.validation import check_run

    run, problems = check_run(document)
    if run is None or problems:
        raise RunError("\n".join(f"{spec_file}: {p}" for p in problems))
    return run, document["spec"]


def load_status(status_file: Path) -> RunStatus | None:
    """A local run's status (status.json); None before its first plan."""
    try:
        return files.load_status(status_file)
    except files.RunNotReadable as error:
        raise RunError(str(error)) from None


def local_nproc() -> int:
    """Processes per level: the local GPUs, or one process on CPU."""
    smi = shutil.which("nvidia-smi")
    if smi:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, check=False)
        gpus = sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))
        if gpus:
            return gpus
    return 1


@dataclass
class LocalExecutor:
    """Carries out plans for one run on this machine."""

    run: LotteryTicketRun
    raw_spec: dict[str, Any]
    storage_root: Path
    nproc: int = 1
    on_event: Callable[[EmitEvent], None] = lambda event: None
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    running: dict[str, Running] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The spec file does not change under a running `lth run`: parsed once, not per step.
        self.submitted = parse_spec(self.raw_spec)
        self.paths = RunPaths(str(self.storage_root.resolve()), self.run.metadata.name)
        self.layout = self.paths.layout
        self.status_file = self.layout.status_file
        self.logs = self.layout.logs

    @classmethod
    def from_file(cls, spec_file: Path, storage_root: Path, nproc: int | None = None) -> LocalExecutor:
        run, raw_spec = load_run(spec_file)
        return cls(run, raw_spec, storage_root, nproc or local_nproc())

    @property
    def name(self) -> str:
        return self.run.metadata.name

    # ------------------------------------------------------------------ state

    def load_status(self) -> RunStatus | None:
        return load_status(self.status_file)

    def save_status(self, status: RunStatus) -> None:
        files.atomic_write_text(self.status_file, json.dumps(status.to_wire(), indent=2) + "\n")

    def observe(self, status: RunStatus | None, spec: RunSpec | None) -> dict[str, ObservedChild]:
        """The children as the run directory shows them."""
        children: dict[str, ObservedChild] = {}
        prep = prep_name(self.name)
        entry = status.preprocessing if status else None
        if self._data_ready(spec):
            children[prep] = ObservedChild(prep, entry.attempts if entry else 1, "Succeeded")
        elif entry is not None and entry.phase in ("Pending", "Running"):
            children[prep] = self._unfinished(prep, entry.attempts)
        for row in status.levels if status else []:
            result = files.read_result(self.layout.result_file(row.level, row.branch))
            if result is not None:
                children[row.name] = ObservedChild(row.name, row.attempts, "Succeeded", result=result)
            elif row.phase in ("Pending", "Running"):
                children[row.name] = self._unfinished(row.name, row.attempts)
        for job in status.stability.jobs if status and status.stability else []:
            found = files.read_stability_result(self.layout.stability(job.point, job.part).result)
            if found is not None:
                children[job.name] = ObservedChild(job.name, job.attempts, "Succeeded", result=found)
            elif job.phase in ("Pending", "Running"):
                children[job.name] = self._unfinished(job.name, job.attempts)
        export = status.export if status else None
        if export is not None and export.phase in ("Pending", "Running"):
            outcome = self.outcomes.get(export.name)
            if outcome is not None and outcome.attempt == export.attempts and outcome.returncode == 0:
                children[export.name] = ObservedChild(export.name, export.attempts, "Succeeded")
            else:
                children[export.name] = self._unfinished(export.name, export.attempts)
        return children

    def observe_source(self, ticket: TicketSpec) -> ObservedSource | None:
        """Where spec.ticket points: another run under the same storage root, or a directory
        (a URL is the trainer's to fetch and check)."""
        from lth.storage.tickets import observe_directory

        if ticket.run is not None:
            source = RunPaths(self.paths.storage_root, ticket.run).layout
            status = load_status(source.status_file)
            return ObservedSource(found=status is not None, status=status)
        if ticket.path is None:
            return None
        return observe_directory(Path(self.paths.resolve(ticket.path)))

    def _termination_log(self, name: str) -> Path:
        """Where a level's trainer writes its termination message (the pod's, on a cluster)."""
        return self.logs / f"{name}.termination-log"

    def _data_ready(self, spec: RunSpec | None) -> bool:
        if spec is None or spec.dataset.format == "prepared":
            return False
        return (Path(self.paths.data_dir(spec)) / MANIFEST_FILE).exists()

    def _unfinished(self, name: str, attempt: int) -> ObservedChild:
        """A child the status says exists, without its outputs: running, failed, or stopped
        (nothing runs it: this runner was restarted, or its start was lost)."""
        if name in self.running:
            return ObservedChild(name, attempt, "Running")
        outcome = self.outcomes.get(name)
        if outcome is not None and outcome.attempt == attempt:
            # The trainer's one-line reason (its termination message); the Spark job's is in its log.
            reason = _read_text(self._termination_log(name))
            if reason.startswith(BAD_INPUT) or outcome.returncode == EXIT_BAD_INPUT:
                message = (
                    reason if reason.startswith(BAD_INPUT) else f"bad input; log tail:\n{outcome.log_tail}"
                )
                return ObservedChild(name, attempt, "Failed", message, retryable=False)
            ended = (
                "exited 0 without writing its outputs"
                if outcome.returncode == 0
                else (f"exit code {outcome.returncode}")
            )
            return ObservedChild(name, attempt, "Failed", f"{ended}; log tail:\n{outcome.log_tail}")
        return ObservedChild(name, attempt, "Stopped")

    # ------------------------------------------------------------------ loop

    def step(self, status: RunStatus | None) -> Plan:
        """Plan once from what the run directory shows, and record the new status."""
        children = self.observe(status, status.accepted_spec if status else None)
        ticket = ticket_to_resolve(self.submitted, status)
        source = self.observe_source(ticket) if ticket is not None else None
        result = plan(self.name, 1, self.submitted, status, children, datetime.now(UTC), source)
        for action in result.actions:
            match action:
                case EmitEvent():
                    self.on_event(action)
                case DeleteChild():
                    self.outcomes.pop(action.name, None)  # the failed attempt's outcome
                case CreatePreprocessing() | CreateLevelJob() | CreateStabilityJob() | CreateExport():
                    pass  # run_local starts the plan's creates (Plan.creates)
                case _:
                    assert_never(action)
        self.save_status(result.status)
        return result

    def show_progress(self, status: RunStatus) -> RunStatus:
        """status.json with the running levels' latest epochs, read off their logs' tails."""
        latest = {}
        for name, child in self.running.items():
            if child.launch.level is not None and child.launch.branch is not None:
                found = workload.latest_epoch(
                    _tail(child.launch.log), child.launch.level, child.launch.branch
                )
                if found is not None:
                    latest[name] = found
        if not latest:
            return status
        shown = record_progress(status, latest)
        if shown != status:
            self.save_status(shown)
        return shown

    def launch(self, result: Plan, action: Create) -> Launch:
        """The process that carries out one of the plan's Create actions."""
        assert result.spec is not None, "the planner creates children of an accepted spec only"
        match action:
            case CreatePreprocessing():
                return self._prep_launch(result.spec)
            case CreateLevelJob():
                return self._level_launch(
                    result.spec, result.status, action.name, action.level, action.branch
                )
            case CreateStabilityJob():
                arguments = stability_arguments(
                    result.spec,
                    self.paths,
                    action.point,
                    action.part,
                    str(self._termination_log(action.name)),
                )
                return self._trainer_launch(result.spec, action.name, arguments)
            case CreateExport():
                return self._export_launch(result.spec)
            case _:
                assert_never(action)

    def _export_launch(self, spec: RunSpec) -> Launch:
        """`lth report` on the run directory (its status.json), as the export Job runs it."""
        name = export_name(self.name)
        argv = [sys.executable, "-m", "lth", "report", str(self.layout.root)]
        if spec.export.url:
            argv += ["--upload", spec.export.url]
            if spec.export.endpoint_url:
                argv += ["--endpoint-url", spec.export.endpoint_url]
        return Launch(name, argv, self.logs / f"{name}.log", {})

    def _prep_launch(self, spec: RunSpec) -> Launch:
        main_file = Path(_module_dir(SPARK_MODULE)) / "__main__.py"
        spark_submit = _tool("spark-submit")
        argv = [
            spark_submit,
            "--master",
            f"local[{os.cpu_count() or 1}]",
            "--driver-memory",
            spec.preprocessing.driver_memory,
            "--conf",
            "spark.ui.enabled=false",
            str(main_file),
            *prep_arguments(spec, self.paths),
        ]
        env = {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
        return Launch(prep_name(self.name), argv, self.logs / f"{prep_name(self.name)}.log", env)

    def _level_launch(self, spec: RunSpec, status: RunStatus, name: str, level: int, branch: Any) -> Launch:
        termination = str(self._termination_log(name))
        rewind_to = chosen_rewind(status, level)
        arguments = trainer_arguments(spec, self.paths, level, branch, termination, status.ticket, rewind_to)
        return self._trainer_launch(spec, name, arguments, level, branch)

    def _trainer_launch(
        self, spec: RunSpec, name: str, arguments: list[str], level: int | None = None, branch: Any = None
    ) -> Launch:
        """The trainer with `arguments` (a level's, or a job of the instability analysis')."""
        # torchrun for several processes; one process needs no launcher, and skipping it
        # saves about 5 s per level (a second torch import, the agent's start and stop).
        launcher = (
            [_tool("torchrun"), "--standalone", f"--nproc-per-node={self.nproc}"]
            if self.nproc > 1
            else [sys.executable]
        )
        argv = [*launcher, "-m", TRAINER_MODULE, *arguments]
        # Each process gets its share of the cores: oversubscribed torch threads spin and
        # slow every job down many times over.
        processes = self.nproc * spec.resources.max_parallel_jobs
        env = {
            "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes)),
            # As the trainer containers get it on a cluster; a Secret's key comes from this
            # process's own environment (the trainer inherits it), as no Secret is here.
            **spec.resources.plain_env,
        }
        return Launch(name, argv, self.logs / f"{name}.log", env, level, branch)

    def start(self, launch: Launch, attempt: int) -> None:
        """Start one child in its own process group, its output appended to its log."""
        launch.log.parent.mkdir(parents=True, exist_ok=True)
        self._termination_log(launch.name).unlink(missing_ok=True)  # an earlier attempt's
        log = launch.log.open("ab")
        started = datetime.now(UTC).isoformat()
        log.write(f"\n=== {started} attempt {attempt}: {' '.join(launch.argv[:6])} ...\n".encode())
        log.flush()
        process = subprocess.Popen(
            launch.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **launch.env},
            # Its own process group (stop_all ends it whole), and killed by the kernel when
            # this runner dies, even by SIGKILL: no orphan trains beside the next `lth run`.
            preexec_fn=start_with_parent_death,
        )
        self.running[launch.name] = Running(launch, attempt, process, log)

    def wait_any(self, tick: Callable[[], None] = lambda: None) -> list[tuple[Launch, Outcome]]:
        """Wait until at least one running child ends; their outcomes, recorded."""
        while True:
            ended = [r for r in self.running.values() if r.process.poll() is not None]
            if ended:
                break
            tick()
            time.sleep(0.2)
        finished = []
        for child in ended:
            del self.running[child.launch.name]
            child.log.close()
            assert child.process.returncode is not None
            outcome = Outcome(child.attempt, child.process.returncode, log_tail(child.launch.log))
            self.outcomes[child.launch.name] = outcome
            finished.append((child.launch, outcome))
        return finished

    def stop_all(self) -> None:
        """Stop every running child (its whole process group): TERM, then KILL after 10 s."""
        for child in self.running.values():
            if child.process.poll() is None:
                os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for child in self.running.values():
            while child.process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if child.process.poll() is None:
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()
            child.log.close()
        self.running.clear()


def _tool(name: str) -> str:
    """A console script of this environment (spark-submit, torchrun), else from PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise RunError(f"`{name}` is not installed: install the project with its spark and trainer extras")
    return found


def _module_dir(module: str) -> str:
    import importlib.util

    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise RunError(f"the Python package {module} is not installed (pip install '.[spark,trainer]')")
    return next(iter(found.submodule_search_locations))
