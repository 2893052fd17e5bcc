"""The planner's answer to what a locked-down cluster does: a refused create (retried at the same
attempt when a quota or a missing API may clear, else the run fails naming the child), and the
namespace's Pod Security level said before any pod is refused (PodsAdmissible)."""

from __future__ import annotations

from lth.api.observed import ObservedChild, ObservedNamespace, Stuck
from lth.api.validation import parse_spec
from lth.plan import CreateLevelJob, EmitEvent, plan
from tests.plan.test_planner import T0, make_spec

SPEC = parse_spec(make_spec(dataset={"format": "prepared", "path": "data"}, pruning={"levels": 1}))
QUOTA = "exceeded quota: jobs, requested: count/pytorchjobs.kubeflow.org=1, used: ..."


def refused(retryable: bool) -> ObservedChild:
    stuck = (
        Stuck("QuotaExceeded", "PyTorchJob run-level-00", f"create refused: {QUOTA}") if retryable else None
    )
    return ObservedChild("run-level-00", 1, "Refused", QUOTA, retryable=retryable, stuck=stuck)


def test_a_quota_refusal_waits_says_why_and_creates_again_at_the_same_attempt() -> None:
    first = plan("run", 1, SPEC, None, {}, T0)
    assert CreateLevelJob("run-level-00", 0, "main", 1) in first.actions
    waiting = plan("run", 1, SPEC, None, {"run-level-00": refused(True)}, T0)
    assert not waiting.creates
    row = waiting.status.levels[0]
    assert (row.phase, row.attempts) == ("Retrying", 1)
    progressing = waiting.status.condition("Progressing")
    assert progressing is not None and progressing.reason == "QuotaExceeded" and QUOTA in progressing.message
    assert any(isinstance(a, EmitEvent) and a.reason == "QuotaExceeded" for a in waiting.actions)
    again = plan("run", 1, SPEC, waiting.status, {}, T0)
    assert again.creates == [CreateLevelJob("run-level-00", 0, "main", 1)]  # the same attempt


def test_any_other_refusal_fails_the_run_naming_the_child_and_the_servers_words() -> None:
    result = plan("run", 1, SPEC, None, {"run-level-00": refused(False)}, T0)
    failed = result.status.condition("Failed")
    assert result.status.phase == "Failed" and failed is not None and failed.reason == "ChildRefused"
    assert failed.message == f"PyTorchJob run-level-00 was refused by the API server: {QUOTA}"


def test_the_namespaces_pod_security_level_is_said_before_any_pod_is_refused() -> None:
    refuses = ObservedNamespace("ml", "restricted:latest", ("the Worker pods: init-pytorch",))
    result = plan("run", 1, SPEC, None, {}, T0, namespace=refuses)
    condition = result.status.condition("PodsAdmissible")
    assert condition is not None and (condition.status, condition.reason) == ("False", "PodSecurityRefuses")
    said = "namespace ml enforces Pod Security restricted:latest, which will refuse the Worker pods: "
    assert condition.message == said + "init-pytorch"
    warnings = [a for a in result.actions if isinstance(a, EmitEvent) and a.reason == "PodSecurityRefuses"]
    assert len(warnings) == 1
    again = plan("run", 1, SPEC, result.status, {}, T0, namespace=refuses)
    assert not [a for a in again.actions if isinstance(a, EmitEvent) and a.reason == "PodSecurityRefuses"]
    admits = plan("run", 1, SPEC, None, {}, T0, namespace=ObservedNamespace("ml", "baseline:latest"))
    condition = admits.status.condition("PodsAdmissible")
    assert condition is not None and condition.status == "True"
    assert plan("run", 1, SPEC, None, {}, T0).status.condition("PodsAdmissible") is None  # nothing read
