"""rewindTo auto through the operator on the emulator: the instability analysis' jobs are
training jobs like a level's (the same builder, the trainer's analysis command line; here
TrainJobs, whose stand-ins run the most parts: Trainer v2, JobSet, Indexed Jobs), their results
come back through node 0's termination message, and the levels after it rewind to the point
it chose. The analysis' PyTorchJobs are validated against the upstream CRD by
tests/cluster/test_render.py, and read back as a level's are."""

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
from tests.operator.test_operator import apply, events
from tests.operator.test_trainjob import PYTORCH, TRAINJOB, listed, pods_of

INSTABILITY = {0: 9.0, 1: 3.0, 2: 1.0, 3: 0.5}
"""Over the ladder 0, 0.25, 0.5, 1 epochs of a 4-epoch schedule: stable from 0.5 epochs."""


def test_the_analysis_runs_as_training_jobs_and_the_levels_rewind_to_its_choice(
    kube: Cluster, operator: Operator
) -> None:
    kube.add(chart_training_runtime())
    script = Script(instability=INSTABILITY.__getitem__)
    with controllers(kube, script):
        resources = {"trainingApi": "TrainJob"}
        manifest = run_manifest("auto", levels=1, pruning={"rewindTo": "auto"}, resources=resources)
        apply(kube, manifest)
        run = wait_for_phase(kube, "auto", {"Succeeded", "Failed"}, timeout=90, operator=operator)
        trainjobs = listed(kube, TRAINJOB)
        pods = pods_of(kube, "auto-stability-02-a")
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
    analysis = {name for name in trainjobs if "-stability-" in name}
    assert analysis == {f"auto-stability-0{p}-{part}" for p in (1, 2) for part in ("a", "b", "path")}
    assert listed(kube, PYTORCH) == {}
    copy = trainjobs["auto-stability-02-a"]
    command = copy["spec"]["trainer"]["command"]
    assert command[:3] == ["torchrun", "-m", "lth_trainer"]
    assert command[command.index("--stability-point") + 1] == "2"
    assert command[command.index("--stability-part") + 1] == "a"
    assert copy["metadata"]["labels"]["lth.dev/stability-point"] == "2"
    assert copy["metadata"]["ownerReferences"][0]["name"] == "auto"
    assert pods and all(p["metadata"]["labels"]["lth.dev/stability-point"] == "2" for p in pods)
    level = trainjobs["auto-level-01"]["spec"]["trainer"]["command"]
    assert level[level.index("--rewind-to") + 1] == "0.5ep"
    assert "--rewind-to" not in trainjobs["auto-level-00"]["spec"]["trainer"]["command"]
    assert {"StabilityMeasured", "RewindChosen"} <= set(events(kube, "auto"))
