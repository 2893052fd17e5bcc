"""The spec is parsed once per reconcile of the operator, and once per `lth run`, not per step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from lth import api
from lth.local.runner import Display, run_local
from tests.kube.cluster import Cluster
from tests.local.test_local import FAKE_CHILD, SPEC, FakeExecutor
from tests.operator.helpers import run_manifest


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every RunSpec.model_validate call from here on."""
    calls: list[Any] = []
    original = api.RunSpec.model_validate.__func__  # type: ignore[attr-defined]

    def counting(cls: type[api.RunSpec], obj: Any, *args: Any, **kwargs: Any) -> api.RunSpec:
        calls.append(obj)
        return original(cls, obj, *args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(api.RunSpec, "model_validate", classmethod(counting))
    return calls


def test_a_local_run_parses_its_spec_once_whatever_its_steps(
    tmp_path: Path, parses: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fake_child.py").write_text(FAKE_CHILD)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(SPEC))
    monkeypatch.setenv("FAKE_CONTROL", str(tmp_path / "control.json"))
    executor = FakeExecutor.from_file(tmp_path / "run.yaml", tmp_path, 1)
    parses.clear()  # reading the file parses it: once per `lth run`
    steps: list[int] = []
    step = executor.step
    monkeypatch.setattr(executor, "step", lambda status: steps.append(1) or step(status))
    assert run_local(executor, Display()).phase == "Succeeded"
    assert len(steps) > 5 and parses == []  # never again per step


def test_a_reconcile_parses_the_spec_once(
    kube_as_default: Cluster, parses: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lth.cluster import handlers, observe

    kubernetes.config.load_kube_config(str(kube_as_default.kubeconfig))
    monkeypatch.setattr(observe, "_client", None)
    monkeypatch.setattr(handlers.kopf, "event", lambda *args, **kwargs: None)
    kube_as_default.kubectl("apply", "-f", "-", input=yaml.safe_dump(run_manifest("once", levels=1)))
    parses.clear()
    for _ in range(3):  # create the prep child, then observe it
        assert handlers.reconcile("default", "once") is not None
        assert len(parses) == 1, parses
        parses.clear()
