"""rewindTo auto through the operator on the emulator: the instability analysis' jobs are
PyTorchJobs like a level's (same builder, the trainer's analysis command line), their results
come back through the master pods' termination messages, and the levels after it rewind to
the point it chose."""

from __future__ import annotations

from tests.kube.cluster import Cluster
from tests.operator.helpers import Operator, Script, controllers, run_manifest, wait_for_phase
from tests.operator.test_operator import apply, children, events

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
