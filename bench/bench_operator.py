"""Operator latency and memory with many concurrent runs on the API emulator.

    .venv/bin/python -m bench.bench_operator [--runs 50] [--levels 2]

Starts the emulator, the real operator process (`kopf run -m lth.kopf_handlers`)
and the simulated child controllers; applies N runs at once; measures, for
every child after the first of each run, the time from its predecessor's
terminal status to its creation (watched on the API server), and the
operator's peak RSS (VmHWM). Prints the figures for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, watch

from lth import manifests
from tests.kube.cluster import running
from tests.operator.helpers import Script, get_run, run_manifest
from tests.operator.plugin import Operator
from tests.operator.simulators import ChildControllers, Finished


class TimedScript(Script):
    """Scripted children that remember when each one was told to finish."""

    def __init__(self) -> None:
        super().__init__(ticks=2)
        self.finished_at: dict[str, float] = {}

    def __call__(self, kind: str, obj: dict[str, Any]) -> Finished | None:
        outcome = super().__call__(kind, obj)
        if outcome is not None:
            self.finished_at.setdefault(obj["metadata"]["name"], time.monotonic())
        return outcome


def watch_creations(api_client: Any, created_at: dict[str, float], stop: threading.Event) -> None:
    custom = client.CustomObjectsApi(api_client)
    group, version, plural = manifests.CHILD_RESOURCES["PyTorchJob"]
    while not stop.is_set():
        stream = watch.Watch().stream(
            custom.list_cluster_custom_object, group, version, plural, timeout_seconds=2
        )
        for event in stream:
            if event["type"] == "ADDED":
                created_at.setdefault(event["object"]["metadata"]["name"], time.monotonic())


def predecessor(child: str) -> str:
    run, level = child.rsplit("-level-", 1)
    return f"{run}-prep" if int(level) == 0 else f"{run}-level-{int(level) - 1:02d}"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--levels", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, running(Path(tmp) / "kubeconfig") as kube:
        operator = Operator(kube, Path(tmp) / "operator.log")
        operator.start()
        script = TimedScript()
        created_at: dict[str, float] = {}
        stop = threading.Event()
        watcher = threading.Thread(
            target=watch_creations, args=(kube.api_client(), created_at, stop), daemon=True
        )
        watcher.start()
        names = [f"bench-{i:03d}" for i in range(args.runs)]
        started = time.monotonic()
        with ChildControllers(kube.api_client(), script, tick=0.1):
            documents = [run_manifest(name, levels=args.levels) for name in names]
            kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))
            for name in names:
                while get_run(kube, name).get("status", {}).get("phase") not in ("Succeeded", "Failed"):
                    if time.monotonic() - started > 600:
                        raise SystemExit(f"{name} did not finish:\n{operator.output()[-3000:]}")
                    time.sleep(0.2)
        elapsed = time.monotonic() - started
        rss = peak_rss_mb(operator.process.pid) if operator.process else float("nan")
        stop.set()
        operator.kill()
        phases = [get_run(kube, name)["status"]["phase"] for name in names]

    gaps = sorted(
        created_at[child] - script.finished_at[predecessor(child)]
        for child in created_at
        if predecessor(child) in script.finished_at
    )
    p95 = gaps[int(0.95 * (len(gaps) - 1))]
    succeeded = phases.count("Succeeded") == len(phases)
    print(f"runs: {args.runs} x {args.levels + 1} levels, all Succeeded: {succeeded}")
    print(f"wall time: {elapsed:.1f} s")
    print(
        f"terminal -> next child created, {len(gaps)} transitions: median {statistics.median(gaps):.2f} s, "
        f"p95 {p95:.2f} s, max {gaps[-1]:.2f} s"
    )
    print(f"operator peak RSS: {rss:.0f} MB")


if __name__ == "__main__":
    main()
