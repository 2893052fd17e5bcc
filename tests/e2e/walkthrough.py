"""The README's cluster walkthrough, run for real on this machine: `python -m tests.e2e.walkthrough`.

No Kubernetes cluster runs here, so the commands talk to the API emulator (tests/kube) with the
upstream stand-ins (Spark operator, training operator, Job controller, scheduler and kubelet,
tests/standins) running every pod as real processes under the pods' uid; the operator is the
real one (`kopf run -m lth.cluster.handlers`), kubectl and lth are the real ones, the S3 store is
moto's server. It prints each command and its output, as Markdown, for the README; `--out FILE`
writes them to FILE too.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import yaml
from kubernetes import client

from tests.e2e.test_cluster_e2e import RUN as E2E_RUN
from tests.kube.cluster import running
from tests.operator.plugin import Operator
from tests.s3 import start_store
from tests.standins import Cluster as StandIns
from tests.standins import ProcessRuntime

S3_PORT_IN_PODS = 9000
S3_HOST = "minio"  # dotless: moto reads a dotted host name as a bucket (virtual-host style)


def walkthrough_run() -> dict[str, Any]:
    """The end-to-end test's run (tests/e2e/test_cluster_e2e.py), under the README's names and
    with a few more epochs, so that `kubectl get ltr` can catch a level between two of them."""
    run = copy.deepcopy(E2E_RUN)
    run["metadata"]["name"] = "digits"
    spec = run["spec"]
    spec["dataset"]["path"] = "imagenet"
    spec["training"]["epochs"] = 6
    spec["export"]["url"] = "s3://tickets/digits"
    del spec["storage"]  # the default mount
    return run


class Transcript:
    """Commands run in a shell with the cluster's kubeconfig, and what they printed."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env, self.cwd = env, cwd
        self.parts: list[str] = []

    def say(self, text: str) -> None:
        self.parts.append(text)
        print(text, flush=True)

    def run(self, command: str, show: str | None = None) -> str:
        done = subprocess.run(
            ["bash", "-c", command], cwd=self.cwd, env=self.env, capture_output=True, text=True, check=False
        )
        output = (done.stdout + done.stderr).rstrip()
        self.say(f"```console\n$ {show or command}\n{output}\n```")
        if done.returncode != 0:
            raise SystemExit(f"`{command}` exited {done.returncode}")
        return output


def wait_until(what: str, ready: Callable[[], bool], timeout: float, operator: Operator) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}\n{operator.output()[-3000:]}")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, help="also write the transcript here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="lth-walkthrough-"))
    work.chmod(0o755)
    volume = work / "volume"  # the ReadWriteMany claim lth-data: world-writable, never chowned
    volume.mkdir(mode=0o777)
    volume.chmod(0o777)
    subprocess.run([sys.executable, "-m", "lth_spark.demo", str(volume / "imagenet")], check=True)
    for folder, _, names in os.walk(volume / "imagenet"):
        os.chmod(folder, 0o755)
        for name in names:
            os.chmod(Path(folder) / name, 0o644)
    store = start_store()
    _, store_port = store.get_host_and_port()
    credentials = {
        "AWS_ACCESS_KEY_ID": "lth",
        "AWS_SECRET_ACCESS_KEY": "lth-secret",
        "AWS_REGION": "us-east-1",
    }
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{store_port}", **_boto(credentials)).create_bucket(
        Bucket="tickets"
    )
    try:
        with running(work / "kubeconfig") as kube, contextlib.ExitStack() as cleanup:
            bin_dir = str(Path(sys.executable).parent)
            env = {**os.environ, **kube.env, "PATH": f"{bin_dir}:{os.environ['PATH']}", "COLUMNS": "120"}
            shell = Transcript(env, work)
            operator = Operator(kube, work / "operator.log")
            operator.env["LTH_RESYNC_SECONDS"] = "2"
            operator.start()
            cleanup.callback(operator.kill)  # also when a step fails
            runtime = ProcessRuntime(external={S3_HOST: (S3_PORT_IN_PODS, store_port)})
            custom = client.CustomObjectsApi(kube.api_client())

            def status() -> dict[str, Any]:
                run = custom.get_namespaced_custom_object(
                    "lth.dev", "v1alpha1", "default", "lotteryticketruns", "digits"
                )
                return run.get("status") or {}

            with StandIns(kube.api_client(), runtime, exports={"lth-data": volume}):
                literals = " ".join(f"--from-literal={k}={v}" for k, v in credentials.items())
                shell.run(
                    f"kubectl create secret generic s3-credentials {literals} "
                    f"--from-literal=AWS_ENDPOINT_URL=http://{S3_HOST}:{S3_PORT_IN_PODS} "
                    # kubectl create sends protobuf, which the emulator does not read: apply it.
                    "--dry-run=client -o yaml | kubectl apply -f -"
                )
                (work / "run.yaml").write_text(yaml.safe_dump(walkthrough_run(), sort_keys=False))
                shell.run("cat run.yaml")
                shell.run("kubectl apply -f run.yaml")

                def level_running() -> bool:
                    rows = [r for r in status().get("levels", []) if r.get("progress")]
                    return bool(rows) and rows[0]["progress"]["epoch"] >= 2

                wait_until("a level's progress", level_running, 900, operator)
                shell.run("kubectl get ltr")
                shell.run("lth status digits")
                shell.run("kubectl get sparkapplications,pytorchjobs")
                wait_until(
                    "the export",
                    lambda: (status().get("export") or {}).get("phase") in ("Succeeded", "Failed"),
                    900,
                    operator,
                )
                shell.run("kubectl get ltr")
                shell.run("kubectl get jobs")
                shell.run("lth status digits")
            local = {**env, **credentials, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{store_port}"}
            shell.env = local
            shell.run("lth ticket fetch s3://tickets/digits ./ticket")
            shell.run("lth ticket inspect ./ticket")
    finally:
        store.stop()
    if args.out is not None:
        args.out.write_text("\n\n".join(shell.parts) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _boto(credentials: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": credentials["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": credentials["AWS_SECRET_ACCESS_KEY"],
        "region_name": credentials["AWS_REGION"],
    }


if __name__ == "__main__":
    sys.exit(main())
