"""Prometheus metrics and health endpoints of the operator.

One small HTTP server (a daemon thread) answers `/metrics`, `/healthz` (alive:
the event loop beat recently) and `/readyz` (started and alive). The kopf
handlers record what happens; the chart points the probes and the
ServiceMonitor at this port.

    metrics = OperatorMetrics()
    server = serve(metrics, port=8080)          # in a kopf startup handler
    metrics.beat()                              # from a kopf timer or any handler
    metrics.run_phase("ml", "r50", "Training")  # after each status write
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, get_args
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from lth.api import Phase, RunStatus
from lth.api.observed import ChildKind

PHASES: tuple[str, ...] = get_args(Phase)

LEVEL_DURATION_BUCKETS = (
    60,
    300,
    900,
    1800,
    3600,
    2 * 3600,
    4 * 3600,
    8 * 3600,
    16 * 3600,
    32 * 3600,
    64 * 3600,
)
"""Seconds: a toy level takes a minute, a ResNet-50 level on ImageNet most of a day."""

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class OperatorMetrics:
    """The operator's metrics in their own registry (tests and several operators never collide)."""

    def __init__(self, heartbeat_timeout: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry()
        self.runs = Gauge("lth_runs", "LotteryTicketRuns by phase.", ["phase"], registry=self.registry)
        self.level_duration = Histogram(
            "lth_level_duration_seconds",
            "Wall time of finished levels (one PyTorchJob or TrainJob each).",
            ["branch"],
            buckets=LEVEL_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.child_failures = Counter(
            "lth_child_failures",
            "Failed child attempts (each is retried up to the run's backoffLimit).",
            ["kind"],
            registry=self.registry,
        )
        run = ["namespace", "name"]
        self.run_level = Gauge("lth_run_level", "The run's current main level.", run, registry=self.registry)
        self.run_epoch = Gauge(
            "lth_run_epoch", "Latest epoch of the run's running main level.", run, registry=self.registry
        )
        self.run_top1 = Gauge(
            "lth_run_top1_percent",
            "Top-1 after the latest epoch of the run's running main level.",
            run,
            registry=self.registry,
        )
        self.run_images_per_second = Gauge(
            "lth_run_images_per_second",
            "Training images/s of that epoch (all processes of the level).",
            run,
            registry=self.registry,
        )
        for phase in PHASES:
            self.runs.labels(phase=phase).set(0)
        self._phases: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self._heartbeat_timeout = heartbeat_timeout
        self._last_beat: float | None = None
        self._ready = False

    # ------------------------------------------------------------------ recording

    def run_phase(self, namespace: str, name: str, phase: str) -> None:
        """Record the run's current phase; a run counts in one phase only."""
        with self._lock:
            self._phases[(namespace, name)] = phase
            self._publish()

    def run_deleted(self, namespace: str, name: str) -> None:
        with self._lock:
            self._phases.pop((namespace, name), None)
            self._publish()
        for gauge in self._run_gauges:
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)

    @property
    def _run_gauges(self) -> tuple[Gauge, ...]:
        return (self.run_level, self.run_epoch, self.run_top1, self.run_images_per_second)

    def run_progress(self, namespace: str, name: str, status: RunStatus) -> None:
        """The per-run gauges: the current main level and, while it runs, its latest epoch."""
        if status.level is None:
            return
        self.run_level.labels(namespace, name).set(status.level)
        entry = status.level_entry(status.level)
        latest = entry.progress if entry is not None else None
        if latest is None:
            return
        self.run_epoch.labels(namespace, name).set(latest.epoch)
        if latest.top1 is not None:
            self.run_top1.labels(namespace, name).set(latest.top1)
        if latest.images_per_second is not None:
            self.run_images_per_second.labels(namespace, name).set(latest.images_per_second)

    def _publish(self) -> None:
        counts = dict.fromkeys(PHASES, 0)
        for phase in self._phases.values():
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            self.runs.labels(phase=phase).set(count)

    def level_finished(self, branch: str, duration_seconds: float) -> None:
        self.level_duration.labels(branch=branch).observe(duration_seconds)

    def child_failed(self, kind: ChildKind) -> None:
        self.child_failures.labels(kind=kind).inc()

    # ------------------------------------------------------------------ health

    def beat(self) -> None:
        """The operator's event loop is alive; the first beat also marks it ready."""
        self._last_beat = self._clock()
        self._ready = True

    def alive(self) -> bool:
        """Alive until started, then only while beats keep coming."""
        if self._last_beat is None:
            return True
        return self._clock() - self._last_beat <= self._heartbeat_timeout

    def ready(self) -> bool:
        return self._ready and self.alive()

    # ------------------------------------------------------------------ HTTP

    def wsgi_app(self) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/metrics":
                return metrics_app(environ, start_response)  # type: ignore[no-any-return]
            if path in ("/healthz", "/readyz"):
                ok = self.alive() if path == "/healthz" else self.ready()
                body = b"ok\n" if ok else b"unhealthy\n"
                start_response(
                    "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
                )
                return [body]
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]

        return app


class _QuietHandler(WSGIRequestHandler):
    """Probes every few seconds would flood the operator's log."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(metrics: OperatorMetrics, port: int, host: str = "0.0.0.0") -> WSGIServer:
    """Serve the endpoints from a daemon thread; `server.server_port` is the bound port (0 picks one)."""
    server = make_server(host, port, metrics.wsgi_app(), handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="lth-metrics", daemon=True).start()
    return server
