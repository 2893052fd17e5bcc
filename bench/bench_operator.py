"""Operator latency and memory with many concurrent runs on the API emulator.

    .venv/bin/python -m bench.bench_operator [--runs 50] [--levels 2]

Starts the emulator, the real operator process (`kopf run -m lth.cluster.handlers`)
and the stand-ins of the training operator, the Spark operator and the kubelet
(`tests.standins`, containers ending as scripted); applies N runs at once; measures,
for every child after the first of each run, the time from its predecessor's
terminal status (watched on the API server) to its creation, and the operator's
peak RSS (VmHWM). Prints the figures for bench/RESULTS.md.
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

from lth.api.observed import ChildKind
from lth.cluster.children.objects import CHILD_RESOURCES
from lth.cluster.children.pytorchjob import observe_pytorch_job
from lth.cluster.children.spark_application import observe_spark_application
from tests.kube.cluster import running
from tests.operator.helpers import Script, controllers, get_run, run_manifest
from tests.operator.plugin import Operator
from tests.standins import Finished


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


def watch_children(
    api_client: Any,
    kind: ChildKind,
    created_at: dict[str, float],
    ended_at: dict[str, float],
    stop: threading.Event,
) -> None:
    """When each child of `kind` was created, and when its status first said it ended."""
    custom = client.CustomObjectsApi(api_client)
    group, version, plural = CHILD_RESOURCES[kind]
    observe = observe_pytorch_job if kind == "PyTorchJob" else observe_spark_application
    while not stop.is_set():
        stream = watch.Watch().stream(
            custom.list_cluster_custom_object, group, version, plural, timeout_seconds=2
        )
        for event in stream:
            obj, now = event["object"], time.monotonic()
            name = obj["metadata"]["name"]
            if event["type"] == "ADDED":
                created_at.setdefault(name, now)
            if event["type"] in ("ADDED", "MODIFIED") and observe(obj).state in ("Succeeded", "Failed"):
                ended_at.setdefault(name, now)


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
        ended_at: dict[str, float] = {}
        stop = threading.Event()
        for kind in CHILD_RESOURCES:
            threading.Thread(
                target=watch_children, args=(kube.api_client(), kind, created_at, ended_at, stop), daemon=True
            ).start()
        names = [f"bench-{i:03d}" for i in range(args.runs)]
        started = time.monotonic()
        with controllers(kube, script):
            documents = [run_manifest(name, levels=args.levels) for name in names]
            kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))
            for name in names:
                while get_run(kube, name).get("status", {}).get("phase") not in ("Succeeded", "Failed"):
                    if time.monotonic() - started > 1200:
                        raise SystemExit(f"{name} did not finish:\n{operator.output()[-3000:]}")
                    time.sleep(0.2)
        elapsed = time.monotonic() - started
        rss = peak_rss_mb(operator.process.pid) if operator.process else float("nan")
        stop.set()
        operator.kill()
        phases = [get_run(kube, name)["status"]["phase"] for name in names]

    levels = [child for child in created_at if "-level-" in child]
    gaps = sorted(created_at[c] - ended_at[predecessor(c)] for c in levels if predecessor(c) in ended_at)
    from_script = sorted(
        created_at[c] - script.finished_at[predecessor(c)]
        for c in levels
        if predecessor(c) in script.finished_at
    )
    p95 = gaps[int(0.95 * (len(gaps) - 1))]
    succeeded = phases.count("Succeeded") == len(phases)
    print(f"runs: {args.runs} x (prep + {args.levels + 1} levels), all Succeeded: {succeeded}")
    print(f"wall time: {elapsed:.1f} s")
    print(
        f"child's terminal status -> next child created, {len(gaps)} transitions: median "
        f"{statistics.median(gaps):.2f} s, p95 {p95:.2f} s, max {gaps[-1]:.2f} s"
    )
    script_p95 = from_script[int(0.95 * (len(from_script) - 1))]
    print(
        f"container ended (scripted) -> next child created, {len(from_script)} transitions: median "
        f"{statistics.median(from_script):.2f} s, p95 {script_p95:.2f} s "
        "(includes the stand-in controllers' and kubelet's steps)"
    )
    print(f"operator peak RSS: {rss:.0f} MB")


if __name__ == "__main__":
    main()
