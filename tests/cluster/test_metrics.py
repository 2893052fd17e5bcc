"""The operator's /metrics, /healthz and /readyz, over real HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lth.cluster.metrics import OperatorMetrics, serve


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def served(clock: FakeClock) -> Iterator[tuple[OperatorMetrics, str]]:
    metrics = OperatorMetrics(heartbeat_timeout=30, clock=clock)
    server = serve(metrics, port=0, host="127.0.0.1")
    yield metrics, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_runs_by_phase_levels_and_failures(served: tuple[OperatorMetrics, str]) -> None:
    metrics, base = served
    metrics.run_phase("ml", "a", "Preprocessing")
    metrics.run_phase("ml", "b", "Training")
    metrics.run_phase("ml", "a", "Training")  # a moved on: counted once
    metrics.run_phase("other", "a", "Failed")  # same name, other namespace
    metrics.run_deleted("ml", "b")
    metrics.level_finished("main", 5400)
    metrics.level_finished("random-reinit", 90)
    metrics.child_failed("PyTorchJob")
    metrics.child_failed("PyTorchJob")
    metrics.child_failed("SparkApplication")

    status, text = get(f"{base}/metrics")
    assert status == 200
    got = samples(text)
    runs = {
        phase: got[("lth_runs", (("phase", phase),))]
        for phase in ("Pending", "Preprocessing", "Training", "Failed", "Succeeded")
    }
    assert runs == {"Pending": 0, "Preprocessing": 0, "Training": 1, "Failed": 1, "Succeeded": 0}
    assert got[("lth_level_duration_seconds_count", (("branch", "main"),))] == 1
    assert got[("lth_level_duration_seconds_sum", (("branch", "main"),))] == 5400
    assert got[("lth_level_duration_seconds_bucket", (("branch", "main"), ("le", "3600.0")))] == 0
    assert got[("lth_level_duration_seconds_bucket", (("branch", "main"), ("le", "7200.0")))] == 1
    assert got[("lth_child_failures_total", (("kind", "PyTorchJob"),))] == 2
    assert got[("lth_child_failures_total", (("kind", "SparkApplication"),))] == 1


def test_health_follows_the_heartbeat(served: tuple[OperatorMetrics, str], clock: FakeClock) -> None:
    metrics, base = served
    assert get(f"{base}/healthz")[0] == 200  # starting: alive, not ready
    assert get(f"{base}/readyz")[0] == 503
    metrics.beat()
    assert get(f"{base}/healthz")[0] == 200
    assert get(f"{base}/readyz")[0] == 200
    clock.now += 31  # the event loop stopped beating
    assert get(f"{base}/healthz")[0] == 503
    assert get(f"{base}/readyz")[0] == 503
    metrics.beat()
    assert get(f"{base}/healthz")[0] == 200
    assert get(f"{base}/nothing")[0] == 404


def test_registries_are_separate() -> None:
    first, second = OperatorMetrics(), OperatorMetrics()
    first.child_failed("PyTorchJob")
    assert second.registry.get_sample_value("lth_child_failures_total", {"kind": "PyTorchJob"}) is None
