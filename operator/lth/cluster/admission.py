"""What a locked-down cluster's admission will refuse of a run's pods, said before it happens,
and the fixes named when it does.

Pod Security (k8s.io/pod-security-admission, `policy/check_*.go`) checks every container of a
pod, init containers included. The run's own pods pass `restricted` (their securityContext is
set in every template), except where upstream or the spec adds what a profile forbids:

- the training operator injects the init container `init-pytorch` into every Worker pod of a
  PyTorchJob with a Master, without a securityContext (kubeflow/trainer v1.9.4
  pkg/controller.v1/pytorch/initcontainer.go); only the operator's cluster-wide
  `--pytorch-init-container-template-file` changes it, never a job (a TrainJob's pods have no
  init container: Trainer v2's torch runtime adds none);
- `resources.ipcLock` adds the capability IPC_LOCK, which neither baseline
  (check_capabilities_baseline.go) nor restricted allows;
- without pod templates (chart value workloads.sparkPodTemplates false), the Spark pods get
  their securityContext only from the Spark operator's webhook.
"""

from __future__ import annotations

from lth.api import RunSpec
from lth.api.defaults import WorkloadDefaults

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
ENFORCE_VERSION_LABEL = "pod-security.kubernetes.io/enforce-version"
INIT_CONTAINER = "init-pytorch"

INIT_FIXES = (
    "label the namespace pod-security.kubernetes.io/enforce=baseline, give the training operator a "
    "restricted init container (--pytorch-init-container-template-file), or run the levels as TrainJobs "
    "(spec.resources.trainingApi: TrainJob)"
)
IPC_LOCK_FIXES = (
    "label the namespace pod-security.kubernetes.io/enforce=privileged, or set spec.resources.ipcLock "
    "false (NCCL then cannot pin memory for RDMA)"
)
SPARK_FIXES = (
    "set the chart value workloads.sparkPodTemplates true (spark-operator >= v2.1.0), enable the Spark "
    "operator's pod webhook for this namespace, or label the namespace pod-security.kubernetes.io/"
    "enforce=baseline"
)
GENERIC_FIXES = "label the namespace with a level that admits the pod, or change what the pod asks for"


def pod_security_refusals(spec: RunSpec, level: str, defaults: WorkloadDefaults) -> list[str]:
    """What a namespace enforcing `level` (baseline, restricted) will refuse of the run's pods,
    one line each with its fixes; empty when it admits them all."""
    if level not in ("baseline", "restricted"):
        return []
    refusals = []
    if spec.resources.ipc_lock:
        refusals.append(
            "every trainer pod: its container adds the capability IPC_LOCK (spec.resources.ipcLock); "
            f"fixes: {IPC_LOCK_FIXES}"
        )
    if level == "restricted" and spec.resources.pods > 1 and spec.resources.level_kind == "PyTorchJob":
        refusals.append(
            f"the Worker pods of each level (spec.resources.pods {spec.resources.pods}): the training "
            f"operator injects the init container {INIT_CONTAINER} without a securityContext "
            f"(allowPrivilegeEscalation, capabilities); fixes: {INIT_FIXES}"
        )
    if level == "restricted" and not defaults.spark_pod_templates and spec.dataset.format != "prepared":
        refusals.append(
            "the Spark driver and executors, unless the Spark operator's pod webhook gives them their "
            f"securityContext; fixes: {SPARK_FIXES}"
        )
    return refusals


def fixes_for(refusal: str) -> str:
    """The fixes for a refusal the API server answered, by what it names."""
    if "violates PodSecurity" not in refusal:
        return ""
    if f'"{INIT_CONTAINER}"' in refusal:
        return INIT_FIXES
    if "IPC_LOCK" in refusal:
        return IPC_LOCK_FIXES
    if "spark-kubernetes-" in refusal:
        return SPARK_FIXES
    return GENERIC_FIXES
