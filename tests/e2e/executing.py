"""A workload for the simulated controllers that really runs what the operator emitted.

A SparkApplication runs as `spark-submit` in local mode with its
`mainApplicationFile` and `arguments`; a PyTorchJob's master container command
runs with the environment the training operator injects. The storage volume's
mount path is mapped to a local folder and the termination-message file to a
file of the test, whose content goes into the fake master pod's status.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lth.commands import SPARK_MAIN_IN_IMAGE, TERMINATION_LOG
from tests.operator.plugin import free_port
from tests.operator.simulators import Finished

LOCAL_SPARK_MAIN = Path(__import__("lth_spark").__file__).parent / "__main__.py"


@dataclass
class ExecutingWorkload:
    """Runs each child's emitted command once, as a subprocess; reports how it ended."""

    mount_path: str
    storage: Path
    logs: Path
    processes: dict[str, tuple[subprocess.Popen[bytes], Path]] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)

    def _map(self, arg: str) -> str:
        return arg.replace(self.mount_path, str(self.storage))

    def __call__(self, kind: str, obj: dict[str, Any]) -> Finished | None:
        key = f"{obj['metadata']['name']}/{obj['metadata']['uid']}"
        if key not in self.processes:
            self._start(kind, obj, key)
        process, termination = self.processes[key]
        if process.poll() is None:
            return None
        message = termination.read_text() if termination.exists() else None
        if process.returncode != 0:
            return Finished(False, f"exit code {process.returncode}", message, process.returncode)
        return Finished(True, termination_message=message)

    def _start(self, kind: str, obj: dict[str, Any], key: str) -> None:
        name = obj["metadata"]["name"]
        termination = self.logs / f"{name}.termination-log"
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
        if kind == "SparkApplication":
            spec = obj["spec"]
            assert spec["mainApplicationFile"] == SPARK_MAIN_IN_IMAGE
            argv = [
                str(Path(sys.executable).with_name("spark-submit")),
                "--master",
                "local[2]",
                "--conf",
                "spark.ui.enabled=false",
                str(LOCAL_SPARK_MAIN),
                *(self._map(a) for a in spec["arguments"]),
            ]
        else:
            container = obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
            injected = {
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(free_port()),
                "WORLD_SIZE": "1",
                "RANK": "0",
                "PET_NNODES": "1",
                "PET_NPROC_PER_NODE": str(obj["spec"].get("nprocPerNode", "1")),
                "PET_NODE_RANK": "0",
            }
            env.update(injected)
            env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
            argv = [
                self._expand(self._map(a), env).replace(TERMINATION_LOG, str(termination))
                for a in container["command"] + container.get("args", [])
            ]
            argv[0] = str(Path(sys.executable).with_name(argv[0])) if argv[0] == "torchrun" else argv[0]
        self.commands[name] = argv
        log = (self.logs / f"{name}.log").open("wb")
        self.processes[key] = (
            subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env),
            termination,
        )

    @staticmethod
    def _expand(arg: str, env: dict[str, str]) -> str:
        """Kubernetes' `$(VAR)` expansion in container commands (`$$` escapes a dollar)."""
        return re.sub(
            r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
            lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
            arg,
        )

    def stop(self) -> None:
        for process, _ in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
