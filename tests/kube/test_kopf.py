"""A tiny kopf operator with a delete handler (so: a finalizer) runs against the emulator."""

from __future__ import annotations

import shutil
import time
from typing import Any

import kopf
import pytest
from kopf.testing import KopfRunner
from kubernetes import client

from tests.kube.cluster import KUBECTL, Cluster
from tests.kube.resources import ROOT

RUN = ("lth.dev", "v1alpha1", "default", "lotteryticketruns", "smallcnn-cpu")

pytestmark = pytest.mark.skipif(shutil.which(KUBECTL) is None, reason="kubectl is not installed")


def tiny_operator(cleaned_up: list[str]) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """kopf's default login (a fresh registry has none): it finds the emulator via `kube_as_default`."""
        return kopf.login_via_client(**kwargs)

    @kopf.on.create("lth.dev", "v1alpha1", "lotteryticketruns", registry=registry)
    def accept(patch: kopf.Patch, **_: Any) -> None:
        patch.status["phase"] = "Pending"

    @kopf.on.delete("lth.dev", "v1alpha1", "lotteryticketruns", registry=registry)
    def clean_up(name: str, **_: Any) -> None:
        cleaned_up.append(name)

    return registry


def test_kopf_operator_with_a_delete_handler(kube_as_default: Cluster) -> None:
    kube = kube_as_default
    cleaned_up: list[str] = []
    custom = client.CustomObjectsApi(kube.api_client())
    args = ["run", "--standalone", "--namespace=default"]
    with KopfRunner(args, registry=tiny_operator(cleaned_up), timeout=30) as runner:
        kube.kubectl("apply", "-f", str(ROOT / "examples" / "cpu-smallcnn.yaml"))
        deadline = time.monotonic() + 20
        while (run := custom.get_namespaced_custom_object(*RUN)).get("status", {}).get("phase") != "Pending":
            assert time.monotonic() < deadline, f"the create handler did not run: {run}"
            time.sleep(0.1)
        assert run["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
        kube.kubectl("delete", "ltr/smallcnn-cpu", "--wait=true", "--timeout=20s")
    assert runner.exception is None and runner.exit_code == 0, runner.output
    assert cleaned_up == ["smallcnn-cpu"]
