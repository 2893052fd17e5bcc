"""A stand-in for the scheduler and the kubelet of a one-node cluster (Kubernetes 1.30).

Written from kubernetes/kubernetes v1.30 (facts and line numbers in
shared/upstream-behaviour.md, section 3); paths under pkg/.

- Scheduling (`scheduler/schedule_one.go`, `framework/plugins/noderesources/fit.go`):
  a pod asking for more `nvidia.com/gpu` than the node has free stays Pending with
  condition PodScheduled=False, reason Unschedulable, and the FitError text with its
  preemption suffix; otherwise it is bound to the node.
- Images (`kubelet/images/image_manager.go`): an image the node cannot pull gives
  the waiting reason ErrImagePull with the runtime's error, then ImagePullBackOff with
  `Back-off pulling image "<image>"` (the v1.30 and v1.31 wording).
- Security (`kubelet/kuberuntime/security_context_others.go` `verifyRunAsNonRoot`,
  `securitycontext/util.go` `DetermineEffectiveSecurityContext`): container fields
  override pod fields one by one; with runAsNonRoot, an explicit uid 0 or an image
  that runs as root (no USER) or as a user name is refused: the container waits with
  reason CreateContainerConfigError and the kubelet's message, and the pod stays Pending.
- Environment (1.32, `kubelet/kubelet_pods.go` `makeEnvironmentVariables`; see
  `Kubelet._environment`): `envFrom` Secrets and ConfigMaps (with `prefix`), then `env`
  values and `secretKeyRef`/`configMapKeyRef`, `optional` honoured; a missing object or key
  is the kubelet's error text as a CreateContainerConfigError, retried on every sync, so
  the pod starts once the Secret is created.
- Running (`kubelet/kuberuntime/kuberuntime_container.go`): init containers one at a
  time, then the containers. A container's process runs as the effective runAsUser
  (else the image's user) and runAsGroup (else the image user's group), with fsGroup and
  supplementalGroups as supplementary groups. Volumes are mounted where the pod says;
  a PersistentVolumeClaim is a directory of an NFS-like export, which (like NFS,
  `volume/nfs/nfs.go`) is never chowned to fsGroup. Command and args are expanded
  (`$(VAR)`, `$$`) as `kubecontainer.ExpandContainerCommandAndArgs` does.
- Exit (`kubelet/kubelet_pods.go`): terminated with exitCode, reason (Completed,
  Error, OOMKilled) and message: the file at terminationMessagePath, or with
  FallbackToLogsOnError and a failure, the log's tail (80 lines, 2 KiB); under
  restartPolicy Never the pod ends Succeeded or Failed, under OnFailure a failed
  container restarts in place (restartCount + 1) and the pod stays Running.

What runs a container is a `Runtime`: real processes (`tests.standins.processes`) or a
script that decides how each child's main container ends (the operator tests).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kubernetes import client

from tests.standins.images import Image
from tests.standins.training_operator import now

GPU = "nvidia.com/gpu"
NODE = "node-1"
LOG_TAIL_LINES = 80
LOG_TAIL_BYTES = 2048


@dataclass(frozen=True)
class Exit:
    """How a container's process ended."""

    code: int
    reason: str = ""
    message: str | None = None
    """The termination message, when the runtime knows it without a file (a scripted workload)."""


@dataclass(frozen=True)
class Launch:
    """Everything the kubelet decided about one container before it starts."""

    pod: dict[str, Any]
    container: dict[str, Any]
    image: Image
    argv: list[str]
    env: dict[str, str]
    uid: int
    gid: int
    groups: tuple[int, ...]
    mounts: tuple[tuple[Path, str, bool], ...]
    """(host directory, path in the container, read-only)"""
    termination_file: Path
    log_file: Path

    @property
    def key(self) -> tuple[str, str]:
        return (self.pod["metadata"]["uid"], self.container["name"])


class Runtime(Protocol):
    def start(self, launch: Launch) -> None: ...

    def poll(self, launch: Launch) -> Exit | None: ...

    def kill_pod(self, pod_uid: str) -> None: ...

    def set_services(self, services: dict[str, list[str]]) -> None:
        """The Services of each namespace: what the cluster DNS resolves."""

    def stop(self) -> None: ...


class ContainerConfigError(Exception):
    """`ErrCreateContainerConfig`: the container cannot be configured; it waits."""


def effective(pod: dict[str, Any], container: dict[str, Any], field_name: str) -> Any:
    """`DetermineEffectiveSecurityContext`: the container's field if set, else the pod's."""
    own = (container.get("securityContext") or {}).get(field_name)
    return own if own is not None else (pod["spec"].get("securityContext") or {}).get(field_name)


def verify_run_as_non_root(pod: dict[str, Any], container: dict[str, Any], image: Image) -> None:
    """`verifyRunAsNonRoot`, with its messages."""
    if not effective(pod, container, "runAsNonRoot"):
        return
    meta = pod["metadata"]
    where = f'(pod: "{meta["name"]}_{meta["namespace"]}({meta["uid"]})", container: {container["name"]})'
    uid = effective(pod, container, "runAsUser")
    if uid is not None:
        if int(uid) == 0:
            raise ContainerConfigError(f"container's runAsUser breaks non-root policy {where}")
        return
    user = image.user.split(":")[0]
    if not user.isdigit() and user:
        raise ContainerConfigError(
            f"container has runAsNonRoot and image has non-numeric user ({user}), "
            f"cannot verify user is non-root {where}"
        )
    if not user or int(user) == 0:
        raise ContainerConfigError(f"container has runAsNonRoot and image will run as root {where}")


FIELD_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def _field_value(pod: dict[str, Any], path: str) -> str:
    """A fieldRef's value, as `ExtractFieldPathAsString` reads it off the pod."""
    meta = pod["metadata"]
    subscript = FIELD_SUBSCRIPT.match(path)
    if subscript:
        return str((meta.get(subscript.group(1)) or {}).get(subscript.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": (pod.get("spec") or {}).get("nodeName"),
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName"),
    }
    if path not in simple:
        raise ContainerConfigError(f'unsupported fieldPath: "{path}"')
    return str(simple[path] or "")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion of command and args: `$$` is a literal `$`, unknown names stay."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        text,
    )


def _base(container: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "name": container["name"],
        "image": container["image"],
        "imageID": "",
        "ready": False,
        "restartCount": (current or {}).get("restartCount", 0),
    }


def _gpus(pod: dict[str, Any]) -> int:
    def asked(container: dict[str, Any]) -> int:
        resources = container.get("resources") or {}
        value = (resources.get("limits") or {}).get(GPU) or (resources.get("requests") or {}).get(GPU) or 0
        return int(value)

    containers = sum(asked(c) for c in pod["spec"]["containers"])
    return max([containers, *(asked(c) for c in pod["spec"].get("initContainers") or [])])


@dataclass
class Kubelet:
    """Schedules, admits and runs every pod of the cluster, one step per `step`."""

    api_client: Any
    runtime: Runtime
    images: dict[str, Image]
    exports: dict[str, Path]
    """PersistentVolumeClaim name -> the NFS-like directory behind it"""
    work: Path
    """Where the kubelet keeps container logs and termination files"""
    gpus: int = 0
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """(pod, reason, message) of the events the kubelet and scheduler would post"""

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api_client)
        self._pull_failures: dict[tuple[str, str], int] = {}
        self._launches: dict[tuple[str, str], Launch] = {}
        self._known: set[str] = set()
        self.seen: dict[tuple[str, str], dict[str, Any]] = {}
        """(namespace, name) -> the pod as the kubelet last saw it, also after it is deleted"""

    def step(self) -> None:
        services: dict[str, list[str]] = {}
        for service in json.loads(self.core.list_service_for_all_namespaces(_preload_content=False).data)[
            "items"
        ]:
            services.setdefault(service["metadata"]["namespace"], []).append(service["metadata"]["name"])
        self.runtime.set_services(services)
        pods = json.loads(self.core.list_pod_for_all_namespaces(_preload_content=False).data)["items"]
        live = {p["metadata"]["uid"] for p in pods if not p["metadata"].get("deletionTimestamp")}
        for uid in self._known - live:
            self.runtime.kill_pod(uid)
        self._known = live
        for pod in pods:
            self.seen[(pod["metadata"]["namespace"], pod["metadata"]["name"])] = pod
            if pod["metadata"]["uid"] in live:
                self._step_pod(pod, pods)

    # ----------------------------------------------------------------- scheduling

    def _step_pod(self, pod: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            return
        if not pod["spec"].get("nodeName"):
            if not pod["spec"].get("schedulingGates"):  # the SchedulingGates plugin's PreEnqueue
                self._schedule(pod, pods)
            return
        self._run(pod)

    def _schedule(self, pod: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        used = sum(
            _gpus(p)
            for p in pods
            if p["spec"].get("nodeName")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        )
        meta = pod["metadata"]
        claims = [
            v["persistentVolumeClaim"]["claimName"]
            for v in pod["spec"].get("volumes") or []
            if "persistentVolumeClaim" in v
        ]
        missing = [c for c in claims if c not in self.exports]
        message = ""
        if missing:  # the VolumeBinding plugin's PreFilter
            message = f'0/1 nodes are available: persistentvolumeclaim "{missing[0]}" not found.'
        elif _gpus(pod) > self.gpus - used:
            message = (
                f"0/1 nodes are available: 1 Insufficient {GPU}. "
                "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
            )
        if message:
            condition = {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
            }
            current = next((c for c in (pod.get("status") or {}).get("conditions") or []), None)
            if current is None or current.get("reason") != "Unschedulable":
                self.events.append((meta["name"], "FailedScheduling", message))
                self._patch_status(
                    pod, {"phase": "Pending", "conditions": [{**condition, "lastTransitionTime": now()}]}
                )
            return
        self.core.patch_namespaced_pod(
            meta["name"], meta["namespace"], {"spec": {"nodeName": NODE}}, _preload_content=False
        )
        self.events.append(
            (meta["name"], "Scheduled", f"Successfully assigned {meta['namespace']}/{meta['name']} to {NODE}")
        )
        self._patch_status(
            pod,
            {
                "phase": "Pending",
                "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1",
                "startTime": now(),
                "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}],
            },
        )

    # ----------------------------------------------------------------- containers

    def _run(self, pod: dict[str, Any]) -> None:
        status = pod.get("status") or {}
        inits = pod["spec"].get("initContainers") or []
        init_statuses = {s["name"]: s for s in status.get("initContainerStatuses") or []}
        statuses = {s["name"]: s for s in status.get("containerStatuses") or []}
        restart = pod["spec"].get("restartPolicy", "Always")
        for container in inits:
            current = init_statuses.get(container["name"])
            if current is not None and (current["state"].get("terminated") or {}).get("exitCode") == 0:
                continue
            new = self._step_container(pod, container, current, restart)
            init_statuses[container["name"]] = new
            terminated = new["state"].get("terminated")
            phase = (
                "Failed"
                if terminated is not None and terminated["exitCode"] != 0 and restart == "Never"
                else "Pending"
            )
            waiting = [
                {**_base(c, None), "state": {"waiting": {"reason": "PodInitializing"}}}
                for c in pod["spec"]["containers"]
            ]
            self._write(
                pod, phase, [init_statuses[c["name"]] for c in inits if c["name"] in init_statuses], waiting
            )
            return
        for container in pod["spec"]["containers"]:
            statuses[container["name"]] = self._step_container(
                pod, container, statuses.get(container["name"]), restart
            )
        ordered = [statuses[c["name"]] for c in pod["spec"]["containers"]]
        states = [s["state"] for s in ordered]
        if all("terminated" in s for s in states):
            failed = any(s["terminated"]["exitCode"] != 0 for s in states)
            phase = "Failed" if failed else "Succeeded"
        elif any("running" in s for s in states) or any(s.get("restartCount", 0) for s in ordered):
            phase = "Running"
        else:
            phase = "Pending"
        self._write(
            pod, phase, [init_statuses[c["name"]] for c in inits if c["name"] in init_statuses], ordered
        )

    def _step_container(
        self, pod: dict[str, Any], container: dict[str, Any], current: dict[str, Any] | None, restart: str
    ) -> dict[str, Any]:
        """The container's next status: started, still waiting (and why), running, or terminated;
        a started container has the runtime's containerID (`convertToAPIContainerStatuses`)."""
        status = self._next_status(pod, container, current, restart)
        state = status["state"]
        if "running" in state or "terminated" in state:
            digest = hashlib.sha256(
                f"{pod['metadata']['uid']}/{container['name']}/{status['restartCount']}".encode()
            ).hexdigest()
            status["containerID"] = f"containerd://{digest}"
            if "terminated" in state:
                state["terminated"].setdefault("containerID", status["containerID"])
        return status

    def _next_status(
        self, pod: dict[str, Any], container: dict[str, Any], current: dict[str, Any] | None, restart: str
    ) -> dict[str, Any]:
        key = (pod["metadata"]["uid"], container["name"])
        base = _base(container, current)
        launch = self._launches.get(key)
        if launch is None:
            return {**base, "state": self._start(pod, container)}
        if current is not None and "terminated" in current["state"]:
            if restart == "OnFailure" and current["state"]["terminated"]["exitCode"] != 0:
                self.runtime.start(launch)
                return {
                    **base,
                    "restartCount": base["restartCount"] + 1,
                    "state": {"running": {"startedAt": now()}},
                }
            return current
        ended = self.runtime.poll(launch)
        if ended is None:
            started = (current or {}).get("state", {}).get("running", {}).get("startedAt", now())
            return {**base, "ready": True, "state": {"running": {"startedAt": started}}}
        terminated: dict[str, Any] = {
            "exitCode": ended.code,
            "reason": ended.reason or ("Completed" if ended.code == 0 else "Error"),
            "startedAt": (current or {}).get("state", {}).get("running", {}).get("startedAt", now()),
            "finishedAt": now(),
        }
        message = (
            ended.message
            if ended.message is not None
            else self._termination_message(container, launch, ended)
        )
        if message:
            terminated["message"] = message
        return {**base, "state": {"terminated": terminated}}

    def _termination_message(self, container: dict[str, Any], launch: Launch, ended: Exit) -> str:
        path = launch.termination_file
        message = path.read_text(errors="replace")[:4096] if path.exists() else ""
        if (
            not message
            and ended.code != 0
            and container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            lines = launch.log_file.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            message = "\n".join(lines)[-LOG_TAIL_BYTES:]
        return message

    def _start(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
        """Pull, configure and start one container; the waiting state when it cannot."""
        meta = pod["metadata"]
        key = (meta["uid"], container["name"])
        image = self.images.get(container["image"])
        if image is None:
            failures = self._pull_failures.get(key, 0)
            self._pull_failures[key] = failures + 1
            if failures == 0:
                name = container["image"]
                error = (
                    f'rpc error: code = NotFound desc = failed to pull and unpack image "{name}": '
                    f'failed to resolve reference "{name}": not found'
                )
                self.events.append(
                    (meta["name"], "Failed", f'Failed to pull image "{container["image"]}": {error}')
                )
                return {"waiting": {"reason": "ErrImagePull", "message": error}}
            self.events.append((meta["name"], "BackOff", f'Back-off pulling image "{container["image"]}"'))
            return {
                "waiting": {
                    "reason": "ImagePullBackOff",
                    "message": f'Back-off pulling image "{container["image"]}"',
                }
            }
        try:
            launch = self._configure(pod, container, image)
        except ContainerConfigError as error:
            self.events.append((meta["name"], "Failed", f"Error: {error}"))
            return {"waiting": {"reason": "CreateContainerConfigError", "message": str(error)}}
        self._launches[key] = launch
        self.runtime.start(launch)
        return {"running": {"startedAt": now()}}

    def _configure(self, pod: dict[str, Any], container: dict[str, Any], image: Image) -> Launch:
        """`generateContainerConfig`: security, user, groups, env, command, mounts."""
        # `GenerateRunContainerOptions` (and in it `makeEnvironmentVariables`) runs before
        # `verifyRunAsNonRoot` in `generateContainerConfig`: a missing Secret is reported first.
        container_env = self._environment(pod, container)
        verify_run_as_non_root(pod, container, image)
        user = effective(pod, container, "runAsUser")
        group = effective(pod, container, "runAsGroup")
        pod_security = pod["spec"].get("securityContext") or {}
        groups = tuple(
            int(g)
            for g in [pod_security.get("fsGroup"), *(pod_security.get("supplementalGroups") or [])]
            if g is not None
        )
        uid = int(user) if user is not None else image.uid
        gid = int(group) if group is not None else image.gid
        # The runtime starts the process with the image's ENV under the container's
        # (containerd: the CRI config's envs are appended to the image config's, last wins).
        env = {**image.env, **container_env}
        # `ExpandContainerCommandAndArgs(container, opts.Envs)`: only the container's variables.
        command = [expand(a, container_env) for a in container.get("command") or image.entrypoint]
        args = [
            expand(a, container_env)
            for a in container.get("args") or ([] if container.get("command") else image.cmd)
        ]
        meta = pod["metadata"]
        folder = self.work / meta["namespace"] / meta["name"]
        folder.mkdir(parents=True, exist_ok=True)
        termination = folder / f"{container['name']}.termination-log"
        termination.write_text("")
        termination.chmod(0o666)
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounts = []
        for mount in container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            if "persistentVolumeClaim" in volume:
                source = self.exports[volume["persistentVolumeClaim"]["claimName"]] / mount.get("subPath", "")
                mounts.append((source, mount["mountPath"], bool(mount.get("readOnly"))))
            # emptyDir (the trainer's /dev/shm) is the node's own memory: nothing to map here.
        return Launch(
            pod=pod,
            container=container,
            image=image,
            argv=[*command, *args],
            env=env,
            uid=uid,
            gid=gid,
            groups=groups,
            mounts=tuple(mounts),
            termination_file=termination,
            log_file=folder / f"{container['name']}.log",
        )

    def _read(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The kubelet's secret or configMap manager `Get`: the object, or None when not found."""
        read = (
            self.core.read_namespaced_secret if plural == "secrets" else self.core.read_namespaced_config_map
        )
        try:
            return json.loads(read(name, namespace, _preload_content=False).data)  # type: ignore[no-any-return]
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise

    def _environment(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        """`makeEnvironmentVariables` (pkg/kubelet/kubelet_pods.go, 1.32): the container's own
        variables, from `envFrom` first, then `env` in order, each entry replacing what came before.

        - `envFrom[].configMapRef` / `secretRef`: every key of the object's `data` (a Secret's
          base64-decoded), with `prefix` in front. A missing object is skipped when `optional`,
          else the error of the kubelet's manager: `NewWatchingSecretManager` /
          `NewWatchingConfigMapManager` build a watch-based `objectCache` whose `Get`
          (pkg/kubelet/util/manager/watch_based_manager.go) returns
          `apierrors.NewNotFound(corev1.Resource("secret"), name)`, i.e.
          `secret "<name>" not found` (`configmap "<name>" not found`).
          No key is skipped: since RelaxedEnvironmentVariableValidation (kubernetes PR 123385,
          1.30) the kubelet no longer drops keys that are not C identifiers, and no longer posts
          the `InvalidEnvironmentVariableNames` event older kubelets did.
        - `env[].value`: `$(VAR)` expanded against the variables so far (a value of "" with a
          `valueFrom` is resolved from the source instead).
        - `env[].valueFrom.secretKeyRef` / `configMapKeyRef`: the key's value; a missing object
          as above; a missing key skips the variable when `optional`, else
          `couldn't find key <key> in Secret <namespace>/<name>` (`... in ConfigMap ...`).
        - `env[].valueFrom.fieldRef`: the pod's field (`podFieldSelectorRuntimeValue`, then
          `fieldpath.ExtractFieldPathAsString`, pkg/fieldpath/fieldpath.go): metadata.name,
          metadata.namespace, metadata.uid, metadata.labels['k'], metadata.annotations['k'],
          spec.nodeName, spec.serviceAccountName; a label or annotation the pod lacks is "".
          `resourceFieldRef` is not resolved here (the variable is left out).

        Objects are read once per call (the `secrets` and `configMaps` maps of the function).
        Any error is raised as `ContainerConfigError`: the container waits with
        CreateContainerConfigError and its message, and the next sync retries.
        """
        namespace = pod["metadata"]["namespace"]
        cache: dict[tuple[str, str], dict[str, Any] | None] = {}

        def source(plural: str, name: str, optional: bool) -> dict[str, Any] | None:
            if (plural, name) not in cache:
                cache[(plural, name)] = self._read(plural, namespace, name)
            found = cache[(plural, name)]
            if found is None and not optional:
                raise ContainerConfigError(
                    f'{"secret" if plural == "secrets" else "configmap"} "{name}" not found'
                )
            return found

        def values(plural: str, obj: dict[str, Any]) -> dict[str, str]:
            data = obj.get("data") or {}
            if plural == "secrets":
                return {k: base64.b64decode(v).decode(errors="surrogateescape") for k, v in data.items()}
            return dict(data)

        env: dict[str, str] = {}
        for item in container.get("envFrom") or []:
            ref, plural = (
                (item["configMapRef"], "configmaps")
                if item.get("configMapRef")
                else (item.get("secretRef"), "secrets")
            )
            if not ref:
                continue
            obj = source(plural, ref["name"], bool(ref.get("optional")))
            if obj is None:
                continue
            prefix = item.get("prefix") or ""
            for key, value in values(plural, obj).items():
                env[prefix + key] = value
        for item in container.get("env") or []:
            value = item.get("value") or ""
            value_from = item.get("valueFrom") or {}
            if value:
                value = expand(value, env)
            elif value_from.get("configMapKeyRef") or value_from.get("secretKeyRef"):
                ref = value_from.get("configMapKeyRef") or value_from["secretKeyRef"]
                plural, kind = (
                    ("configmaps", "ConfigMap")
                    if value_from.get("configMapKeyRef")
                    else ("secrets", "Secret")
                )
                optional = bool(ref.get("optional"))
                obj = source(plural, ref["name"], optional)
                if obj is None:
                    continue
                found = values(plural, obj)
                if ref["key"] not in found:
                    if optional:
                        continue
                    raise ContainerConfigError(
                        f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}"
                    )
                value = found[ref["key"]]
            elif value_from.get("fieldRef"):
                value = _field_value(pod, value_from["fieldRef"].get("fieldPath", ""))
            elif value_from:
                continue  # resourceFieldRef: not emulated
            env[item["name"]] = value
        return env

    def _write(
        self,
        pod: dict[str, Any],
        phase: str,
        init_statuses: list[dict[str, Any]],
        statuses: list[dict[str, Any]],
    ) -> None:
        status = pod.get("status") or {}
        new = {"phase": phase, "containerStatuses": statuses}
        if init_statuses:
            new["initContainerStatuses"] = init_statuses
        if all(status.get(k) == v for k, v in new.items()):
            return
        self._patch_status(pod, new)

    def _patch_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            self.core.patch_namespaced_pod_status(
                meta["name"], meta["namespace"], {"status": status}, _preload_content=False
            )
        except client.ApiException as error:
            if error.status != 404:
                raise

    def log(self, namespace: str, pod: str, container: str) -> str:
        """What `kubectl logs` would show."""
        path = self.work / namespace / pod / f"{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""
