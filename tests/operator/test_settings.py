"""The operator's kopf settings that the scale rehearsal (200 runs) depends on."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from lth.cluster import handlers


def test_reconciles_get_enough_threads_for_hundreds_of_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf runs sync handlers in a pool of cores + 4 threads by default: 6 on 2 cores, where
    200 runs' reconciles queued behind each other (handoff p95 7 s against 0.9 s with 32)."""
    monkeypatch.setattr(handlers.kubernetes.config, "load_incluster_config", lambda: None)
    monkeypatch.setattr(handlers, "serve", lambda *_: None)
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    assert settings.execution.max_workers == handlers.HANDLER_THREADS >= 32
    executor: Any = settings.execution.executor
    assert executor._max_workers == handlers.HANDLER_THREADS
