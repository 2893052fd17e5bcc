"""rewindTo auto through the operator on the emulator: the instability analysis' jobs are
PyTorchJobs like a level's (same builder, the trainer's analysis command line), their results
come back through the master pods' termination messages, and the levels after it rewind to
the point it chose."""

from __future__ import annotations

from tests.kube.cluster import Cluster
from tests.operator.helpers import (
    Operator,
    Script,
    chart_training_runtime,
    controllers,
    run_manifest,
    wait_for_phase,
)
from tests.operator.test_operator import apply, children, events
from tests.operator.test_trainjob import PYTORCH, TRAINJOB, listed, pods_of

INSTABILITY = {0: 9.0, 1: 3.0, 2: 1.0, 3: 0.5}
"""Over the ladder 0, 0.25, 0.5, 1 epochs of a 4-epoch schedule: stable from 0.5 epochs."""


def test_the_analysis_runs_as_pytorchjobs_and_the_levels_rewind_to_its_choice(
    kube: Cluster, operator: Operator
) -> None:
    script = Script(instability=INSTABILITY.__getitem__)
    with controllers(kube, script):
        apply(kube, run_manifest("auto", levels=2, pruning={"rewindTo": "auto"}))
        run = wait_for_phase(kube, "auto", {"Succeeded", "Failed"}, timeout=90, operator=operator)
    status = run["status"]
    assert status["phase"] == "Succeeded", status
    stability = status["stability"]
    assert stability["ladder"] == [0.0, 0.25, 0.5, 1.0]
    assert [(p["point"], p["instability"], p["stable"]) for p in stability["points"]] == [
        (1, 3.0, False),
        (2, 1.0, True),
    ]
    assert stability["chosen"]["rewindTo"] == "0.5ep"
    assert stability["cost"] == 4 * 4 / 4  # four copies of 4 epochs each, of a 4-epoch schedule
    assert status["cost"]["stability"] == 4.0
    jobs = children(kube)
    analysis = {name for name in jobs if "-stability-" in name}
    assert analysis == {f"auto-stability-0{p}-{part}" for p in (1, 2) for part in ("a", "b", "path")}
    copy = jobs["auto-stability-02-a"]
    command = copy["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--stability-point") + 1] == "2"
    assert command[command.index("--stability-part") + 1] == "a"
    assert copy["metadata"]["labels"]["lth.dev/stability-point"] == "2"
    assert copy["metadata"]["ownerReferences"][0]["name"] == "auto"
    level = jobs["auto-level-01"]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    command = level["containers"][0]["command"]
    assert command[command.index("--rewind-to") + 1] == "0.5ep"
    level_0 = jobs["auto-level-00"]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert "--rewind-to" not in level_0["containers"][0]["command"]
    assert {"StabilityMeasured", "RewindChosen"} <= set(events(kube, "auto"))


def test_with_trainjobs_the_analysis_jobs_are_trainjobs_too(kube: Cluster, operator: Operator) -> None:
    """spec.resources.trainingApi TrainJob: the analysis' jobs come from the same builder as a
    level's (Trainer v2 and JobSet stand-ins), with the analysis' command line and labels."""
    kube.add(chart_training_runtime())
    script = Script(instability=INSTABILITY.__getitem__)
    with controllers(kube, script):
        resources = {"trainingApi": "TrainJob"}
        manifest = run_manifest("autov2", levels=1, pruning={"rewindTo": "auto"}, resources=resources)
        apply(kube, manifest)
        run = wait_for_phase(kube, "autov2", {"Succeeded", "Failed"}, timeout=90, operator=operator)
        trainjobs = listed(kube, TRAINJOB)
        pods = pods_of(kube, "autov2-stability-02-a")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert run["status"]["stability"]["chosen"]["rewindTo"] == "0.5ep"
    assert {f"autov2-stability-0{p}-{part}" for p in (1, 2) for part in ("a", "b", "path")} <= set(trainjobs)
    assert listed(kube, PYTORCH) == {}
    copy = trainjobs["autov2-stability-02-a"]
    command = copy["spec"]["trainer"]["command"]
    assert command[:3] == ["torchrun", "-m", "lth_trainer"] and "--stability-part" in command
    assert pods and all(p["metadata"]["labels"]["lth.dev/stability-point"] == "2" for p in pods)
    level = trainjobs["autov2-level-01"]["spec"]["trainer"]["command"]
    assert level[level.index("--rewind-to") + 1] == "0.5ep"
