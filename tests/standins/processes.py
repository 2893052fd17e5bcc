"""Containers as real processes: each under its pod's uid and gid, in a sandbox like a pod's.

Each process starts as root in a private mount and UTS namespace (the pod's hostname,
its /etc/hosts, its volumes bind-mounted at their mount paths, its termination-message
file at terminationMessagePath), inside a network namespace shared by the pods of one
job (a loopback-only network, so two jobs never fight over port 23456), then drops to
the container's uid, gid and supplementary groups with setpriv. The cluster's DNS is
the pod's /etc/hosts: every Service of the namespace resolves to the pods' loopback
address, rewritten in place as Services come and go, and so does a pod with a hostname and a
subdomain (`<hostname>.<subdomain>`, the record a headless Service of that name gives it, as a
JobSet's pods have) once it started. A service outside the cluster (an S3
endpoint on this machine) is reachable from every pod under a name of its own
(`ProcessRuntime.external`), as a cluster's pods reach a store on the network.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.standins.kubelet import Exit, Launch

LABEL_JOB = "training.kubeflow.org/job-name"
LABEL_APP = "sparkoperator.k8s.io/app-name"
LABEL_BATCH_JOB = "batch.kubernetes.io/job-name"
TOOLS = {
    name: shutil.which(name) or f"/usr/bin/{name}"
    for name in ("ip", "nsenter", "unshare", "mount", "setpriv", "hostname")
}


def network_of(launch: Launch) -> str:
    """The network namespace of a pod: one per PyTorchJob, Spark app or batch/v1 Job (whose
    recreated pods share it), else one per pod."""
    meta = launch.pod["metadata"]
    labels = meta.get("labels") or {}
    owner = (
        labels.get(LABEL_JOB)
        or labels.get(LABEL_APP)
        or (f"batch-job/{labels[LABEL_BATCH_JOB]}" if LABEL_BATCH_JOB in labels else meta["name"])
    )
    return "lth-" + hashlib.sha256(f"{meta['namespace']}/{owner}".encode()).hexdigest()[:10]


@dataclass
class ProcessRuntime:
    """Runs each admitted container's command for real, as the kubelet stand-in configured it."""

    processes: dict[tuple[str, str], subprocess.Popen[bytes]] = field(default_factory=dict)
    networks: dict[str, tuple[str, Path]] = field(default_factory=dict)
    """network namespace -> the pods' namespace and their hosts file"""
    services: dict[str, list[str]] = field(default_factory=dict)
    """namespace -> Service names, as the stand-in DNS serves them"""
    hostnames: dict[str, set[str]] = field(default_factory=dict)
    external: dict[str, tuple[int, int]] = field(default_factory=dict)
    """host name -> (port the pods connect to, port on this machine's loopback): services
    outside the cluster, such as an S3 store, that every pod reaches by that name"""
    _listeners: list[socket.socket] = field(default_factory=list)

    def start(self, launch: Launch) -> None:
        network = self._network(launch)
        meta, spec = launch.pod["metadata"], launch.pod["spec"]
        hostname = spec.get("hostname") or meta["name"]  # the kubelet's `GeneratePodHostNameAndDomain`
        names = {meta["name"], hostname}
        if spec.get("subdomain"):
            domain = f"{hostname}.{spec['subdomain']}"
            names |= {domain, f"{domain}.{meta['namespace']}.svc.cluster.local"}
        self.hostnames.setdefault(network, set()).update(names)
        self._write_hosts(network, meta["namespace"])
        home = launch.log_file.with_name(f"{launch.container['name']}-home")
        home.mkdir(exist_ok=True)
        os.chown(home, launch.uid, launch.gid)
        env = {"HOME": str(home), "HOSTNAME": hostname, **launch.env}
        termination = launch.container.get("terminationMessagePath", "/dev/termination-log")
        lines = [
            "set -e",
            f"{TOOLS['hostname']} {shlex.quote(hostname)}",
            f"{TOOLS['mount']} --bind {shlex.quote(str(self.networks[network][1]))} /etc/hosts",
        ]
        for name, path in _image_accounts(launch, home).items():
            lines.append(f"{TOOLS['mount']} --bind {shlex.quote(str(path))} /etc/{name}")
        for source, target, read_only in launch.mounts:
            source.mkdir(parents=True, exist_ok=True)
            Path(target).mkdir(parents=True, exist_ok=True)
            option = " -o ro" if read_only else ""
            lines.append(f"{TOOLS['mount']} --bind{option} {shlex.quote(str(source))} {shlex.quote(target)}")
        if not Path(termination).exists():
            Path(termination).parent.mkdir(parents=True, exist_ok=True)
            Path(termination).touch()
        lines.append(
            f"{TOOLS['mount']} --bind {shlex.quote(str(launch.termination_file))} {shlex.quote(termination)}"
        )
        groups = f"--groups={','.join(map(str, launch.groups))}" if launch.groups else "--clear-groups"
        lines.append(f"cd {shlex.quote(launch.container.get('workingDir') or str(home))}")
        lines.append(f'exec {TOOLS["setpriv"]} --reuid={launch.uid} --regid={launch.gid} {groups} -- "$@"')
        argv = [
            TOOLS["nsenter"],
            f"--net=/run/netns/{network}",
            "--",
            TOOLS["unshare"],
            "--mount",
            "--uts",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            "\n".join(lines),
            "pod-sandbox",
            *launch.argv,
        ]
        log = launch.log_file.open("ab")
        self.processes[launch.key] = subprocess.Popen(
            argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def poll(self, launch: Launch) -> Exit | None:
        process = self.processes.get(launch.key)
        if process is None or process.poll() is None:
            return None
        code = process.returncode
        return Exit(code if code >= 0 else 128 - code)

    def kill_pod(self, pod_uid: str) -> None:
        for (uid, _), process in self.processes.items():
            if uid == pod_uid and process.poll() is None:
                _kill(process)

    def set_services(self, services: dict[str, list[str]]) -> None:
        if services != self.services:
            self.services = services
            for network, (namespace, _) in self.networks.items():
                self._write_hosts(network, namespace)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                _kill(process)
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        for network in self.networks:
            subprocess.run([TOOLS["ip"], "netns", "delete", network], check=False, capture_output=True)
        self.networks.clear()

    def _network(self, launch: Launch) -> str:
        network = network_of(launch)
        if network not in self.networks:
            subprocess.run([TOOLS["ip"], "netns", "delete", network], check=False, capture_output=True)
            subprocess.run([TOOLS["ip"], "netns", "add", network], check=True, capture_output=True)
            subprocess.run(
                [TOOLS["ip"], "-n", network, "link", "set", "lo", "up"], check=True, capture_output=True
            )
            hosts = launch.log_file.parent / f"{network}.hosts"
            self.networks[network] = (launch.pod["metadata"]["namespace"], hosts)
            for inside, outside in self.external.values():
                self._listeners.append(_forward(network, inside, outside))
        return network

    def _write_hosts(self, network: str, namespace: str) -> None:
        """The pod's /etc/hosts: rewritten in place, as it is bind-mounted into running pods."""
        names = sorted(self.hostnames.get(network, set()))
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost"]
        lines += [f"127.0.0.1\t{name}" for name in [*names, *sorted(self.external)]]
        for service in self.services.get(namespace, []):
            fqdn = f"{service}.{namespace}.svc.cluster.local"
            lines.append(f"127.0.0.1\t{fqdn} {service}.{namespace}.svc {service}.{namespace} {service}")
        path = self.networks[network][1]
        with path.open("a+") as hosts:
            hosts.seek(0)
            hosts.truncate()
            hosts.write("\n".join(lines) + "\n")
        path.chmod(0o644)


def _image_accounts(launch: Launch, home: Path) -> dict[str, Path]:
    """The image's /etc/passwd and /etc/group: the machine's, plus the process's user and group
    where they are missing (the project's images create theirs; apache/spark's entrypoint adds
    an arbitrary uid): Java and Python look the user up for its home."""
    files = {}
    for name, entry, key in (
        ("passwd", f"lth:x:{launch.uid}:{launch.gid}::{home}:/usr/sbin/nologin", launch.uid),
        ("group", f"lth:x:{launch.gid}:", launch.gid),
    ):
        text = Path(f"/etc/{name}").read_text()
        if not any(line.split(":")[2:3] == [str(key)] for line in text.splitlines()):
            text += entry + "\n"
        path = launch.log_file.with_name(f"{launch.container['name']}.{name}")
        path.write_text(text)
        path.chmod(0o644)
        files[name] = path
    return files


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


CLONE_NEWNET = 0x40000000


def _forward(network: str, inside: int, outside: int) -> socket.socket:
    """Listen on 127.0.0.1:`inside` in a pod network and relay each connection to this machine's
    127.0.0.1:`outside`. The listening socket is made by a thread that joined the pod network
    (setns(2) moves only the calling thread); a socket keeps the namespace it was made in."""
    made: list[socket.socket] = []

    def listen_inside() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        handle = os.open(f"/run/netns/{network}", os.O_RDONLY)
        try:
            if libc.setns(handle, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {network}")
            made.append(socket.create_server(("127.0.0.1", inside)))
        finally:
            os.close(handle)

    joined = threading.Thread(target=listen_inside)
    joined.start()
    joined.join()
    if not made:
        raise RuntimeError(f"could not listen on port {inside} in network namespace {network}")
    listener = made[0]

    def accept() -> None:
        with contextlib.suppress(OSError):  # closed by stop()
            while True:
                client, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", outside))
                for source, target in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pipe, args=(source, target), daemon=True).start()

    threading.Thread(target=accept, name=f"forward-{network}-{inside}", daemon=True).start()
    return listener


def _pipe(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)
