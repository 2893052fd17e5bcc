"""A stand-in for the Spark operator's SparkApplication controller and its pod webhook (v2.x).

Written from kubeflow/spark-operator v2.5.2 (the behaviour below is the same since
v2.1.0); paths are relative to that tag.

- A new app is submitted: spark-submit (`submission.go`, `buildSparkSubmitArgs`)
  creates the driver pod `<app>-driver` (`GetDriverPodName`, pkg/util/sparkapplication.go)
  with container `spark-kubernetes-driver` (`SparkDriverContainerName`, pkg/common/spark.go),
  the labels Spark and the operator set (`spark-role`, `spark-app-selector`,
  `sparkoperator.k8s.io/app-name`, `launched-by-spark-operator`, `submission-id`), and the
  volumes of `spark.kubernetes.driver.volumes.*` in sparkConf, which spark-submit mounts
  itself. The app goes to SUBMITTED with submissionID, driverInfo.podName and the attempt
  counters (`submitSparkApplication`, internal/controller/sparkapplication/controller.go).
- A driver pod template (`spec.driver.template`, spark-operator >= v2.1.0 with Spark >= 3.0)
  is written to `spark.kubernetes.driver.podTemplateFile`, with
  `spark.kubernetes.driver.podTemplateContainerName=spark-kubernetes-driver`
  (`driverPodTemplateOption`, submission.go); Spark builds the driver pod on it
  (`KubernetesDriverBuilder`, `KubernetesUtils.loadPodFromTemplate`): the template's pod
  securityContext and the named container's securityContext are kept, Spark sets the name,
  image, arguments, environment and its volumes. No webhook is involved.
- A driver pod the API server refuses (Pod Security, a quota) fails spark-submit: its
  stderr ends in fabric8's `Failure executing: POST at: .../pods. Message: <the server's
  message>.` (`OperationSupport.requestFailure`), the app goes to SUBMISSION_FAILED with
  `failed to run spark-submit: <stderr>` (`runSparkSubmit`, submission.go), then to FAILED
  under restartPolicy Never (`reconcileFailedSubmissionSparkApplication`, controller.go).
- The mutating pod webhook (`internal/webhook/sparkpod_defaulter.go`), on by default in
  the chart (`webhook.enable`), adds at pod creation what spark-submit cannot: the app's
  `volumes` with the driver's `volumeMounts`, the container `securityContext`, the
  `podSecurityContext` (replacing the pod's wholesale) and an ownerReference to the app.
  `webhook=False` models a Spark operator installed without it.
- SUBMITTED, RUNNING and UNKNOWN re-read the driver pod (`updateDriverState`): its phase
  and the driver container's state give the next state (`GetDriverState`,
  `DriverStateToApplicationState`); a failed driver records
  `driver container failed with ExitCode: <n>, Reason: <reason>`, or `driver container
  status missing`; a driver pod gone past the 10 s grace period gives FAILING with
  `driver pod not found`.
- SUCCEEDING -> COMPLETED; FAILING -> FAILED under restartPolicy Never (the default;
  `ShouldRetry` retries only under Always or OnFailure with onFailureRetries set).
- An app deleted takes its driver pod with it (the webhook's ownerReference, or the
  controller's cleanup of the driver when the app is gone).

Executors: the stand-in's driver runs Spark in local mode inside its own pod, so no
executor pods are created and `executorState` stays empty.
"""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from tests.standins.training_operator import now

GROUP, VERSION, PLURAL = "sparkoperator.k8s.io", "v1beta2", "sparkapplications"
DRIVER_CONTAINER = "spark-kubernetes-driver"
LABEL_APP_NAME = "sparkoperator.k8s.io/app-name"
LABEL_LAUNCHED = "sparkoperator.k8s.io/launched-by-spark-operator"
LABEL_SUBMISSION = "sparkoperator.k8s.io/submission-id"
DRIVER_POD_GRACE_SECONDS = 10
PYTHON_RUNNER = "org.apache.spark.deploy.PythonRunner"


def _seconds_since(stamp: str) -> float:
    then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return (datetime.now(UTC) - then).total_seconds()


def _conf_volumes(conf: dict[str, str], role: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What spark-submit mounts from `spark.kubernetes.<role>.volumes.persistentVolumeClaim.<name>.*`."""
    prefix = f"spark.kubernetes.{role}.volumes.persistentVolumeClaim."
    names = sorted({key[len(prefix) :].split(".")[0] for key in conf if key.startswith(prefix)})
    volumes, mounts = [], []
    for name in names:
        options = {
            k[len(prefix) + len(name) + 1 :]: v for k, v in conf.items() if k.startswith(f"{prefix}{name}.")
        }
        volumes.append({"name": name, "persistentVolumeClaim": {"claimName": options["options.claimName"]}})
        mount = {
            "name": name,
            "mountPath": options["mount.path"],
            "readOnly": options.get("mount.readOnly") == "true",
        }
        if "mount.subPath" in options:
            mount["subPath"] = options["mount.subPath"]
        mounts.append(mount)
    return volumes, mounts


@dataclass
class SparkOperator:
    """Moves every SparkApplication one step per `step`, through the API server."""

    api_client: Any
    webhook: bool = True
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)

    def step(self) -> None:
        apps = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
        live = {(a["metadata"]["namespace"], a["metadata"]["name"]) for a in apps}
        for app in apps:
            if not app["metadata"].get("deletionTimestamp"):
                self.reconcile(app)
        self._collect_orphans(live)

    def reconcile(self, app: dict[str, Any]) -> None:
        status = copy.deepcopy(app.get("status") or {})
        old = copy.deepcopy(status)
        state = (status.get("applicationState") or {}).get("state", "")
        if state == "":
            self._submit(app, status)
        elif state in ("SUBMITTED", "RUNNING", "UNKNOWN"):
            self._update_driver_state(app, status)
        elif state == "SUBMISSION_FAILED" and not _retries(app):
            status["applicationState"]["state"] = "FAILED"
            status["terminationTime"] = now()
        elif state == "SUCCEEDING":
            status["applicationState"]["state"] = "COMPLETED"
        elif state == "FAILING" and (app["spec"].get("restartPolicy") or {}).get("type", "Never") == "Never":
            # restartPolicy Never (the webhook's default): no retry.
            status["applicationState"]["state"] = "FAILED"
            message = status["applicationState"].get("errorMessage", "")
            self.events.append((app["metadata"]["name"], "SparkApplicationFailed", message))
        if status != old:
            meta = app["metadata"]
            try:
                self.custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], {"status": status}
                )
            except client.ApiException as error:
                if error.status != 404:
                    raise

    def _submit(self, app: dict[str, Any], status: dict[str, Any]) -> None:
        spec, meta = app["spec"], app["metadata"]
        image = (spec.get("driver") or {}).get("image") or spec.get("image")
        submission = str(uuid.uuid4())
        if not image:
            status.update(
                applicationState={
                    "state": "SUBMISSION_FAILED",
                    "errorMessage": "driver container image is not specified",
                }
            )
            return
        pod = self._driver_pod(app, image, submission)
        try:
            self.core.create_namespaced_pod(meta["namespace"], pod, _preload_content=False)
        except client.ApiException as error:
            if error.status == 409:
                message = "driver pod already exist"
            elif error.status in (400, 403, 422):
                refusal = json.loads(error.body or "{}").get("message") or str(error.reason)
                message = (
                    'failed to run spark-submit: Exception in thread "main" '
                    "io.fabric8.kubernetes.client.KubernetesClientException: Failure executing: POST at: "
                    f"https://kubernetes.default.svc/api/v1/namespaces/{meta['namespace']}/pods. "
                    f"Message: {refusal}."
                )
            else:
                raise
            # The status is a struct upstream: driverInfo is always written, empty here.
            status.update(
                applicationState={"state": "SUBMISSION_FAILED", "errorMessage": message},
                driverInfo=status.get("driverInfo") or {},
                lastSubmissionAttemptTime=now(),
                submissionAttempts=int(status.get("submissionAttempts", 0)) + 1,
            )
            return
        status.update(
            applicationState={"state": "SUBMITTED"},
            submissionID=submission,
            driverInfo={"podName": pod["metadata"]["name"]},
            lastSubmissionAttemptTime=now(),
            submissionAttempts=int(status.get("submissionAttempts", 0)) + 1,
            executionAttempts=int(status.get("executionAttempts", 0)) + 1,
        )

    def _driver_pod(self, app: dict[str, Any], image: str, submission: str) -> dict[str, Any]:
        """The driver pod as spark-submit creates it, then as the webhook mutates it."""
        spec, meta = app["spec"], app["metadata"]
        driver = spec.get("driver") or {}
        conf = spec.get("sparkConf") or {}
        name = (
            driver.get("podName") or conf.get("spark.kubernetes.driver.pod.name") or f"{meta['name']}-driver"
        )
        volumes, mounts = _conf_volumes(conf, "driver")
        template = copy.deepcopy(driver.get("template") or {})
        labels = {
            **((template.get("metadata") or {}).get("labels") or {}),
            **(driver.get("labels") or {}),
            "spark-role": "driver",
            "spark-app-selector": f"spark-{uuid.uuid4().hex}",
            LABEL_APP_NAME: meta["name"],
            LABEL_LAUNCHED: "true",
            LABEL_SUBMISSION: submission,
        }
        template_spec = template.get("spec") or {}
        others = [c for c in template_spec.get("containers") or [] if c.get("name") != DRIVER_CONTAINER]
        base = next(
            (c for c in template_spec.get("containers") or [] if c.get("name") == DRIVER_CONTAINER), {}
        )
        container: dict[str, Any] = {
            **base,
            "name": DRIVER_CONTAINER,
            "image": image,
            "imagePullPolicy": spec.get("imagePullPolicy", "IfNotPresent"),
            # What Spark's KubernetesDriverBuilder gives the image's entrypoint.
            "args": [
                "driver",
                "--class",
                PYTHON_RUNNER,
                spec["mainApplicationFile"],
                *spec.get("arguments", []),
            ],
            "env": [*base.get("env", []), {"name": "SPARK_DRIVER_BIND_ADDRESS", "value": "0.0.0.0"}],
            "volumeMounts": [*base.get("volumeMounts", []), *mounts],
        }
        pod_spec: dict[str, Any] = {
            **template_spec,
            "containers": [container, *others],
            "volumes": [*template_spec.get("volumes", []), *volumes],
            "restartPolicy": "Never",
            "serviceAccountName": driver.get("serviceAccount", "default"),
        }
        if spec.get("imagePullSecrets"):
            pod_spec["imagePullSecrets"] = [{"name": s} for s in spec["imagePullSecrets"]]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels},
            "spec": pod_spec,
        }
        if self.webhook:
            self._mutate(app, pod)
        return pod

    @staticmethod
    def _mutate(app: dict[str, Any], pod: dict[str, Any]) -> None:
        """`sparkpod_defaulter.go`: volumes, security contexts and the owner, for the driver."""
        spec, driver = app["spec"], app["spec"].get("driver") or {}
        container = pod["spec"]["containers"][0]
        names = {v["name"] for v in driver.get("volumeMounts") or []}
        pod["spec"]["volumes"] += [v for v in spec.get("volumes") or [] if v["name"] in names]
        container["volumeMounts"] += list(driver.get("volumeMounts") or [])
        if driver.get("securityContext"):
            container["securityContext"] = copy.deepcopy(driver["securityContext"])
        if driver.get("podSecurityContext"):
            pod["spec"]["securityContext"] = copy.deepcopy(driver["podSecurityContext"])
        pod["metadata"]["ownerReferences"] = [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "SparkApplication",
                "name": app["metadata"]["name"],
                "uid": app["metadata"]["uid"],
                "controller": True,
            }
        ]

    def _update_driver_state(self, app: dict[str, Any], status: dict[str, Any]) -> None:
        namespace = app["metadata"]["namespace"]
        name = (status.get("driverInfo") or {}).get("podName")
        pod = self._read_pod(namespace, name) if name else None
        app_state = status["applicationState"]
        if pod is None:
            if (
                app_state["state"] != "SUBMITTED"
                or _seconds_since(status["lastSubmissionAttemptTime"]) > DRIVER_POD_GRACE_SECONDS
            ):
                app_state.update(state="FAILING", errorMessage="driver pod not found")
                status["terminationTime"] = now()
            return
        status["sparkApplicationId"] = pod["metadata"]["labels"].get("spark-app-selector", "")
        phase = pod["status"].get("phase")
        terminated = next(
            (
                (c.get("state") or {}).get("terminated")
                for c in pod["status"].get("containerStatuses") or []
                if c["name"] == DRIVER_CONTAINER
            ),
            None,
        )
        if phase == "Pending":
            driver = "PENDING"
        elif phase == "Running":
            driver = (
                "RUNNING"
                if terminated is None
                else ("COMPLETED" if terminated["exitCode"] == 0 else "FAILED")
            )
        elif phase == "Succeeded":
            driver = "COMPLETED"
        elif phase == "Failed":
            driver = "COMPLETED" if terminated is not None and terminated["exitCode"] == 0 else "FAILED"
        else:
            driver = "UNKNOWN"
        if driver in ("COMPLETED", "FAILED"):
            status.setdefault("terminationTime", now())
            if driver == "FAILED":
                if terminated is not None:
                    if terminated["exitCode"] != 0:
                        app_state["errorMessage"] = (
                            f"driver container failed with ExitCode: {terminated['exitCode']}, "
                            f"Reason: {terminated.get('reason', '')}"
                        )
                else:
                    app_state["errorMessage"] = "driver container status missing"
        new_state = {
            "PENDING": "SUBMITTED",
            "RUNNING": "RUNNING",
            "COMPLETED": "SUCCEEDING",
            "FAILED": "FAILING",
        }.get(driver, "UNKNOWN")
        if new_state != app_state["state"]:
            self.events.append(
                (app["metadata"]["name"], f"SparkDriver{driver.title()}", f"Driver {name} {driver.lower()}")
            )
            app_state["state"] = new_state

    def _read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            response = self.core.read_namespaced_pod(name, namespace, _preload_content=False)
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return json.loads(response.data)  # type: ignore[no-any-return]

    def _collect_orphans(self, live: set[tuple[str, str]]) -> None:
        """Driver pods of deleted apps go too (the controller's cleanup of a deleted app)."""
        pods = json.loads(
            self.core.list_pod_for_all_namespaces(
                label_selector=f"{LABEL_LAUNCHED}=true", _preload_content=False
            ).data
        )["items"]
        for pod in pods:
            meta = pod["metadata"]
            if (meta["namespace"], meta["labels"].get(LABEL_APP_NAME)) not in live:
                try:
                    self.core.delete_namespaced_pod(meta["name"], meta["namespace"])
                except client.ApiException as error:
                    if error.status != 404:
                        raise


def _retries(app: dict[str, Any]) -> bool:
    """`ShouldRetry` (pkg/util/sparkapplication.go) for a failed submission: only OnFailure or
    Always with onSubmissionFailureRetries set; Never (the default) fails the app."""
    policy = app["spec"].get("restartPolicy") or {}
    kind = policy.get("type", "Never")
    return kind == "Always" or (kind == "OnFailure" and policy.get("onSubmissionFailureRetries") is not None)
