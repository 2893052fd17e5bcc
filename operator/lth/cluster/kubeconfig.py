"""A run on a cluster, read through the kubeconfig as kubectl reads it, for `lth status` and `lth watch`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from lth import api
from lth.storage.files import RunNotReadable


@dataclass(frozen=True)
class ClusterRun:
    """A LotteryTicketRun to read: its name and namespace (the kubeconfig context's by default)."""

    name: str
    namespace: str | None = None

    def read(self) -> api.RunStatus:
        import kubernetes
        import urllib3

        try:
            kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
            _, context = kubernetes.config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
        except (kubernetes.config.ConfigException, OSError) as error:
            raise RunNotReadable(
                f"no usable kubeconfig ({error}); set KUBECONFIG or use a run directory"
            ) from None
        namespace = self.namespace or (context or {}).get("context", {}).get("namespace") or "default"
        where = f"{namespace}/{self.name}"
        custom = kubernetes.client.CustomObjectsApi()
        try:
            response = custom.get_namespaced_custom_object(
                api.GROUP,
                api.VERSION,
                namespace,
                api.PLURAL,
                self.name,
                _preload_content=False,
                _request_timeout=10,
            )
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                raise RunNotReadable(f"lotteryticketrun {where} not found") from None
            raise RunNotReadable(
                f"lotteryticketrun {where}: the API server said {error.status} {error.reason}"
            ) from None
        except urllib3.exceptions.HTTPError as error:
            host = kubernetes.client.Configuration.get_default_copy().host
            raise RunNotReadable(f"cannot reach the cluster at {host}: {_cause(error)}") from None
        body: dict[str, Any] = json.loads(response.data)  # type: ignore[attr-defined]
        if not body.get("status"):
            raise RunNotReadable(f"lotteryticketrun {where} has no status yet: is the lth operator running?")
        try:
            return api.RunStatus.model_validate(body["status"])
        except ValidationError as error:
            raise RunNotReadable(f"lotteryticketrun {where}: status this lth cannot read ({error})") from None


def _cause(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    return str(reason or error)


def namespace_pod_security(namespace: str) -> str | None:
    """The Pod Security level a namespace enforces (its pod-security.kubernetes.io/enforce
    label), read through the kubeconfig; None when it enforces none."""
    import kubernetes
    import urllib3

    from lth.cluster.admission import ENFORCE_LABEL

    try:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
        found = kubernetes.client.CoreV1Api().read_namespace(namespace, _request_timeout=10)
    except (kubernetes.config.ConfigException, OSError) as error:
        raise RunNotReadable(f"no usable kubeconfig ({error}); give --pod-security instead") from None
    except kubernetes.client.ApiException as error:
        raise RunNotReadable(
            f"namespace {namespace}: the API server said {error.status} {error.reason}"
        ) from None
    except urllib3.exceptions.HTTPError as error:
        host = kubernetes.client.Configuration.get_default_copy().host
        raise RunNotReadable(f"cannot reach the cluster at {host}: {_cause(error)}") from None
    level = ((found.metadata and found.metadata.labels) or {}).get(ENFORCE_LABEL)
    return level if level in ("baseline", "restricted") else None
