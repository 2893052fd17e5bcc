"""A Kubernetes API server emulator: kmock's scaffold plus an object store that behaves like the real one.

kmock (`KubernetesScaffold`) gives the HTTP server, request parsing, API
discovery, Status-shaped errors, and its DSL for test-specific reactions
(`server['post pods'] << 500` still overrides the store). kmock's own
stateful `KubernetesEmulator` keeps objects as plain merged dicts and cannot
carry resourceVersions, preconditions or the status split, so the requests
for served kinds go to the store below instead.

All store operations are synchronous (no `await` inside), so each one is
atomic on the event loop; watchers are woken through `self._wakeup`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import json
import random
import re
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import parsing, rendering  # kmock exports neither at the top level

from tests.kube import openapi, printing, schema, selectors
from tests.kube.resources import Kind

Obj = dict[str, Any]
Key = tuple[str, str, str, str | None, str]  # group, version, plural, namespace, name
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
GENERATED_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _parse_path(path: str) -> parsing.ParsedPath:
    """kmock reads `/api/v1/namespaces[/name]` as a namespace scope; it is the namespaces resource."""
    parts = path.strip("/").split("/")
    rest = parts[2:]
    if (
        parts[0] == "api"
        and rest[:1] == ["namespaces"]
        and (len(rest) <= 2 or rest[2] in ("status", "finalize"))
    ):
        return parsing.ParsedPath("", parts[1], "namespaces", None, *[*rest[1:3], None, None][:2])
    return _kmock_parse_path(path)


_kmock_parse_path, parsing.parse_path = parsing.parse_path, _parse_path


class _ForTheStore(Exception):
    """Raised by the lowest-priority reaction: no test-specific reaction took the request."""


def _error(status: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details=details)


Admission = Callable[["ApiServer", Kind, "Obj"], None]
"""An admission plugin of creates: (server, kind, object) -> None, editing the object in place
(mutating) or raising `refused` (validating)."""


def refused(status: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    """The error an admission plugin raises to refuse a write, as the API server answers it."""
    return _error(status, reason, message, **details)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _without(obj: Obj, *keys: str) -> Obj:
    return {key: value for key, value in obj.items() if key not in keys}


ContainerLogs = Callable[[str, str, str], str | None]
"""(namespace, pod, container) -> the container's log so far; None when the node has none."""

_LIVE: weakref.WeakValueDictionary[int, ApiServer] = weakref.WeakValueDictionary()


def serving(url: str) -> ApiServer | None:
    """The emulator of this process that serves `url` (a client's `configuration.host`), if any."""
    wanted = url.rstrip("/")
    return next(
        (
            api
            for api in list(_LIVE.values())
            if any(str(server.url).rstrip("/") == wanted for server in api.servers)
        ),
        None,
    )


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesScaffold):
    """The emulated API server; `register()` kinds, then serve it with `kmock.Server(api)`."""

    kinds: dict[tuple[str, str, str], Kind] = attrs.field(factory=dict, init=False)
    objects: dict[Key, Obj] = attrs.field(factory=dict, init=False)
    # Every event, for watches that resume from a resourceVersion: (resourceVersion, kind, type, object).
    history: list[tuple[int, Kind, str, Obj]] = attrs.field(factory=list, init=False)
    revision: int = attrs.field(default=1, init=False)
    _wakeup: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    _openapi: dict[str, Obj] = attrs.field(factory=dict, init=False)
    container_logs: ContainerLogs | None = attrs.field(default=None, init=False)
    """Who runs the containers: what `pods/log` reads (set by the stand-in node; unset: empty logs)."""
    mutating: list[Admission] = attrs.field(factory=list, init=False)
    """Mutating admission of a create (a webhook's defaults, Kueue's suspend), before the schema."""
    validating: list[Admission] = attrs.field(factory=list, init=False)
    """Validating admission of a create (Pod Security, ResourceQuota, a webhook's refusal), after
    the schema; each raises `refused(...)` to refuse, as the real plugins answer."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        _LIVE[id(self)] = self
        self.fallback[self._is_served] << _ForTheStore
        self.fallback["get", re.compile(r"/openapi/v3/?")] << (lambda: openapi.index(self._openapi))
        self.fallback["get", re.compile(r"/openapi/v3/(.+)")] << self._serve_openapi

    # -- kinds and discovery --------------------------------------------------------------------

    def register(self, *kinds: Kind) -> None:
        for kind in kinds:
            self.kinds[kind.group, kind.version, kind.plural] = kind
            self.resources[kmock.resource(kind.group, kind.version, kind.plural)] = kmock.ResourceInfo(
                kind=kind.kind,
                singular=kind.singular or kind.kind.lower(),
                namespaced=kind.namespaced,
                shortnames=set(kind.short_names),
                categories=set(kind.categories),
                subresources={*(("status",) if kind.has_status else ()), *kind.subresources},
                verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
            )
        self._openapi = openapi.documents(list(self.kinds.values()))

    def end_watches(self) -> None:
        """End every open watch (as a server that shuts down does), so that the HTTP server can stop."""
        self._closing = True
        self._wakeup.set()

    def add(self, obj: Obj) -> Obj:
        """Create an object as a POST would (for seeding a test's world without a client)."""
        kind = next(
            kind
            for kind in self.kinds.values()
            if (kind.api_version, kind.kind) == (obj["apiVersion"], obj["kind"])
        )
        namespace = obj["metadata"].get("namespace", "default") if kind.namespaced else None
        return self._create(kind, rendering.Request(method="POST", data=obj, namespace=namespace))[0]

    def _kind_of(self, request: rendering.Request) -> Kind | None:
        resource = request.resource
        if resource is None or resource.plural is None:
            return None
        return self.kinds.get((resource.group or "", resource.version or "", resource.plural))

    def _is_served(self, request: rendering.Request) -> bool:
        return self._kind_of(request) is not None

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        document = await super()._serve_version(request)
        assert isinstance(document, dict)
        document["groupVersion"] = document["groupVersion"].lstrip("/")  # kmock says "/v1" for the core group
        for entry in document["resources"]:  # kmock gives subresources the short names too: "ns" is ambiguous
            if "/" in entry["name"]:
                entry.update(shortNames=[], categories=[])
        return document

    async def _serve_server_version(self, request: rendering.Request) -> rendering.Payload:
        return {"major": "1", "minor": "32", "gitVersion": "v1.32.0-emulator", "platform": "linux/amd64"}

    def _serve_openapi(self, request: rendering.Request) -> rendering.Payload:
        path = request.url.path.removeprefix("/openapi/v3/")
        if path not in self._openapi:
            raise _error(404, "NotFound", f"the server could not find the requested resource ({path})")
        return self._openapi[path]

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if not isinstance(exc, kmock.KubernetesError):
            return await super()._render_error(exc)
        # kmock puts a Python traceback into every error's details; the real server sends only the Status.
        status = {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "code": exc.status,
            "reason": exc.reason,
            "message": exc.message,
            "details": exc.details or {},
        }
        return aiohttp.web.json_response(status, status=exc.status)

    # -- request dispatch -----------------------------------------------------------------------

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        try:
            return await super()._handle(request)
        except _ForTheStore:
            return await self._serve(request)
        finally:
            # kmock matches each request by scanning its log of all requests so far, which makes a
            # request cost O(requests served); an operator makes thousands. Keep the ones in flight.
            self._requests[:] = [other for other in self._requests if other is not request]

    async def _serve(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        kind = self._kind_of(request)
        assert kind is not None
        if kind.namespaced != (request.namespace is not None) and not (
            request.method == "GET" and not request.name
        ):
            raise _error(404, "NotFound", "the server could not find the requested resource")
        key: Key = (kind.group, kind.version, kind.plural, request.namespace, request.name or "")
        if request.subresource in kind.subresources and request.name:
            return self._subresource(kind, key, request)
        if request.subresource not in (None, "status") or (request.subresource and not kind.has_status):
            raise _error(404, "NotFound", f"{kind.qualified} has no subresource {request.subresource!r}")
        if request.method == "GET":
            if request.params.get("watch") in ("true", "1"):
                return await self._watch(request, kind)
            return self._respond(
                request, kind, self._get(kind, key) if request.name else self._list(kind, request)
            )
        with self._forgotten() if "dryRun" in request.params else contextlib.nullcontext():
            return self._respond(request, kind, *self._write(kind, key, request))

    def _write(self, kind: Kind, key: Key, request: rendering.Request) -> tuple[Obj, list[str], int]:
        """The written object, the unknown fields pruned from it, and the HTTP status."""
        match request.method, request.name:
            case "POST", None:
                return *self._create(kind, request), 201
            case "PUT", str():
                return *self._update(kind, key, request, self._body(request)), 200
            case "PATCH", str():
                return *self._update(kind, key, request, self._patched(kind, key, request)), 200
            case "DELETE", str():
                return self._delete(key, self._propagation(kind, request)), [], 200
        raise _error(405, "MethodNotAllowed", f"{request.method} is not supported on {request.url.path}")

    @contextlib.contextmanager
    def _forgotten(self) -> Iterator[None]:
        """`?dryRun=All`: admit and answer as for a real write, then forget the write."""
        objects, history_length, revision = dict(self.objects), len(self.history), self.revision
        try:
            yield
        finally:
            self.objects, self.revision = objects, revision
            del self.history[history_length:]

    def _respond(
        self,
        request: rendering.Request,
        kind: Kind,
        obj: Obj,
        unknown: list[str] | None = None,
        status: int = 200,
    ) -> aiohttp.web.Response:
        if "as=Table" in request.headers.get("Accept", ""):
            items = obj.get("items", [obj])
            include = request.params.get("includeObject", "PartialObjectMetadata")
            obj = printing.table(kind, items, obj["metadata"].get("resourceVersion", ""), include)
        headers = (
            {"Warning": ", ".join(f'299 - "unknown field \\"{path}\\""' for path in unknown)}
            if unknown
            else {}
        )
        return aiohttp.web.json_response(obj, status=status, headers=headers)

    @staticmethod
    def _body(request: rendering.Request) -> Obj:
        content_type = request.headers.get("Content-Type", "application/json").split(";")[0]
        if content_type != "application/json":  # kubectl sends protobuf for built-ins; 415 makes it use JSON
            raise _error(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format "
                f"({content_type}) - accepted media types include: application/json",
            )
        if not isinstance(request.data, dict):
            raise _error(400, "BadRequest", "the body of the request is not a JSON object")
        return copy.deepcopy(request.data)

    # -- reads ----------------------------------------------------------------------------------

    def _get(self, kind: Kind, key: Key) -> Obj:
        if key not in self.objects:
            raise _error(
                404,
                "NotFound",
                f'{kind.qualified} "{key[-1]}" not found',
                name=key[-1],
                group=kind.group,
                kind=kind.plural,
            )
        return self.objects[key]

    def _matcher(self, kind: Kind, request: rendering.Request) -> Callable[[Obj], bool]:
        try:
            selected = selectors.from_params(dict(request.params))
        except ValueError as exc:
            raise _error(400, "BadRequest", str(exc)) from None

        def matches(obj: Obj) -> bool:
            meta = obj["metadata"]
            return (
                obj["apiVersion"] == kind.api_version
                and obj["kind"] == kind.kind
                and request.namespace in (None, meta.get("namespace"))
                and request.name in (None, meta["name"])
                and selected(obj)
            )

        return matches

    def _in_order(self) -> list[Obj]:
        """By namespace and name, as the real server lists (etcd key order)."""
        return [
            obj for key, obj in sorted(self.objects.items(), key=lambda item: (item[0][3] or "", item[0][4]))
        ]

    def _list(self, kind: Kind, request: rendering.Request) -> Obj:
        matches = self._matcher(kind, request)
        items = [obj for obj in self._in_order() if matches(obj)]
        return {
            "apiVersion": kind.api_version,
            "kind": f"{kind.kind}List",
            "metadata": {"resourceVersion": str(self.revision)},
            "items": items,
        }

    async def _watch(self, request: rendering.Request, kind: Kind) -> aiohttp.web.StreamResponse:
        """Events after `resourceVersion`; without one, the current objects first (as ADDED)."""
        matches = self._matcher(kind, request)
        since = request.params.get("resourceVersion", "")
        if since in ("", "0"):
            backlog = [("ADDED", obj) for obj in self._in_order() if matches(obj)]
            position = len(self.history)
        else:
            backlog = []
            position = next(
                (i for i, (rv, *_) in enumerate(self.history) if rv > int(since)), len(self.history)
            )
        as_table = "as=Table" in request.headers.get("Accept", "")
        include = request.params.get("includeObject", "PartialObjectMetadata")
        deadline = asyncio.get_running_loop().time() + float(request.params.get("timeoutSeconds") or 3600)

        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        assert request._raw_request is not None
        await response.prepare(request._raw_request)
        sent = 0

        async def send(event_type: str, obj: Obj) -> None:
            nonlocal sent
            if as_table:
                obj = printing.table(
                    kind, [obj], obj["metadata"]["resourceVersion"], include, headers=not sent
                )
            await response.write(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")
            sent += 1

        try:
            for event_type, obj in backlog:
                await send(event_type, obj)
            while True:
                wakeup = self._wakeup
                while position < len(self.history):
                    _, event_kind, event_type, obj = self.history[position]
                    position += 1
                    if event_kind == kind and matches(obj):
                        await send(event_type, obj)
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0 or self._closing:
                    break
                try:
                    await asyncio.wait_for(wakeup.wait(), remaining)
                except TimeoutError:
                    break
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        return response

    # -- pods/log -------------------------------------------------------------------------------

    def _subresource(self, kind: Kind, key: Key, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.method != "GET":
            raise _error(
                405,
                "MethodNotAllowed",
                f"the server does not allow this method on the requested resource ({request.method})",
            )
        return self._log(kind, key, request)

    def _log(self, kind: Kind, key: Key, request: rendering.Request) -> aiohttp.web.Response:
        """`GET pods/{name}/log`: the API server's `LogLocation` (pkg/registry/core/pod/strategy.go),
        then the kubelet's `validateContainerLogStatus` (pkg/kubelet/kubelet_pods.go), whose errors
        the API server answers as 400 with the kubelet's text; then the log, as text/plain."""
        pod = self._get(kind, key)
        name, params = key[-1], request.params
        for unsupported in ("follow", "timestamps"):
            if params.get(unsupported, "false") not in ("false", "0"):
                raise _error(400, "BadRequest", f"{unsupported}=true is not supported by the emulator")
        numbers = {}
        for option in ("tailLines", "limitBytes"):
            if option in params:
                try:
                    numbers[option] = int(params[option])
                except ValueError:
                    raise _error(
                        400, "BadRequest", f'invalid value "{params[option]}" for {option}'
                    ) from None
        # ValidatePodLogOptions (pkg/apis/core/validation/validation.go)
        invalid = [
            f"{option}: Invalid value: {numbers[option]}: {message}"
            for option, low, message in (
                ("tailLines", 0, "must be greater than or equal to 0"),
                ("limitBytes", 1, "must be greater than 0"),
            )
            if option in numbers and numbers[option] < low
        ]
        if invalid:
            listed = invalid[0] if len(invalid) == 1 else f"[{', '.join(invalid)}]"
            raise _error(422, "Invalid", f'PodLogOptions "{name}" is invalid: {listed}')
        container = self._log_container(pod, params.get("container", ""))
        if not pod["spec"].get("nodeName"):
            return aiohttp.web.Response(text="", content_type="text/plain")  # no host: an empty location
        self._validate_container_log_status(pod, container, params.get("previous") in ("true", "1"))
        hook = self.container_logs
        text = (hook(key[3] or "", name, container) if hook is not None else None) or ""
        if "tailLines" in numbers:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[len(lines) - numbers["tailLines"] :] if numbers["tailLines"] else [])
        if "limitBytes" in numbers:
            text = text.encode()[: numbers["limitBytes"]].decode(errors="ignore")
        return aiohttp.web.Response(text=text, content_type="text/plain")

    @staticmethod
    def _log_container(pod: Obj, container: str) -> str:
        """`LogLocation`: the container asked for, which must exist; else the only one."""
        name = pod["metadata"]["name"]
        spec = pod.get("spec") or {}
        containers = [c["name"] for c in spec.get("containers") or []]
        inits = [c["name"] for c in spec.get("initContainers") or []]
        ephemeral = [c["name"] for c in spec.get("ephemeralContainers") or []]
        if container:
            if container not in (*containers, *inits, *ephemeral):
                raise _error(400, "BadRequest", f"container {container} is not valid for pod {name}")
            return container
        if len(containers) == 1:
            return containers[0]
        if not containers:
            raise _error(400, "BadRequest", f"a container name must be specified for pod {name}")
        message = (
            f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
        )
        if inits:
            message += f" or one of the init containers: [{' '.join(inits)}]"
        if ephemeral:
            message += f" or one of the ephemeral containers: [{' '.join(ephemeral)}]"
        raise _error(400, "BadRequest", message)

    @staticmethod
    def _validate_container_log_status(pod: Obj, container: str, previous: bool) -> None:
        """`validateContainerLogStatus`, with the kubelet's messages."""
        name = pod["metadata"]["name"]
        status = pod.get("status") or {}
        found = next(
            (
                s
                for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")
                for s in status.get(key) or []
                if s.get("name") == container
            ),
            None,
        )
        where = f'container "{container}" in pod "{name}"'
        if found is None:
            raise _error(400, "BadRequest", f"{where} is not available")
        state, last = found.get("state") or {}, (found.get("lastState") or {}).get("terminated")
        if previous:
            if not (last or {}).get("containerID"):
                raise _error(
                    400,
                    "BadRequest",
                    f'previous terminated container "{container}" in pod "{name}" not found',
                )
            return
        if "running" in state:
            return
        if "terminated" in state or last is not None:
            # "in cases where the next container didn't start, terminated.ContainerID will be empty"
            ids = [(state.get("terminated") or {}).get("containerID"), (last or {}).get("containerID")]
            if not any(ids):
                raise _error(400, "BadRequest", f"{where} is terminated")
            return
        if "waiting" in state:
            reason = (state["waiting"] or {}).get("reason", "")
            why = {
                "ErrImagePull": "image can't be pulled",
                "ImagePullBackOff": "trying and failing to pull image",
            }.get(reason, reason)
            raise _error(400, "BadRequest", f"{where} is waiting to start: {why}")
        raise _error(400, "BadRequest", f"{where} is waiting to start - no logs yet")

    # -- writes ---------------------------------------------------------------------------------

    def _record(self, kind: Kind, event_type: str, obj: Obj) -> Obj:
        """Give the object a new resourceVersion, log the event, wake the watchers."""
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)
        self.history.append((self.revision, kind, event_type, obj))
        self._wakeup.set()
        self._wakeup = asyncio.Event()
        return obj

    def _store(self, kind: Kind, key: Key, obj: Obj, event_type: str) -> Obj:
        self.objects[key] = obj
        return self._record(kind, event_type, obj)

    def _admit(self, kind: Kind, obj: Obj, request: rendering.Request) -> list[str]:
        """Prune, default and validate against the CRD schema; return the pruned unknown fields."""
        meta = obj["metadata"]
        errors = (
            []
            if DNS_SUBDOMAIN.fullmatch(meta["name"])
            else [
                f'metadata.name: Invalid value: "{meta["name"]}": a lowercase RFC 1123 subdomain must '
                "consist of lower case alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character"
            ]
        )
        outcome = schema.admit(obj, kind.schema) if kind.schema is not None else schema.Outcome()
        errors += outcome.errors
        if outcome.unknown_fields and request.params.get("fieldValidation") == "Strict":
            fields = ", ".join(f'unknown field "{path}"' for path in outcome.unknown_fields)
            raise _error(
                400,
                "BadRequest",
                f'{kind.kind} in version "{kind.version}" cannot be handled as a '
                f"{kind.kind}: strict decoding error: {fields}",
            )
        if errors:
            listed = errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]"
            raise _error(
                422,
                "Invalid",
                f'{kind.kind}.{kind.group} "{meta["name"]}" is invalid: {listed}'
                if kind.group
                else f'{kind.kind} "{meta["name"]}" is invalid: {listed}',
                name=meta["name"],
                group=kind.group,
                kind=kind.kind,
                causes=[
                    {
                        "reason": "FieldValueInvalid",
                        "message": e.split(": ", 1)[1],
                        "field": e.split(": ", 1)[0],
                    }
                    for e in errors
                ],
            )
        return [] if request.params.get("fieldValidation") == "Ignore" else outcome.unknown_fields

    def _create(self, kind: Kind, request: rendering.Request) -> tuple[Obj, list[str]]:
        obj = self._body(request)
        meta = obj.setdefault("metadata", {})
        if (
            obj.get("apiVersion", kind.api_version) != kind.api_version
            or obj.get("kind", kind.kind) != kind.kind
        ):
            raise _error(
                400,
                "BadRequest",
                f"the body is {obj.get('apiVersion')}/{obj.get('kind')}, "
                f"the URL is for {kind.api_version}/{kind.kind}",
            )
        if meta.get("namespace", request.namespace) != request.namespace and kind.namespaced:
            raise _error(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        meta.pop("namespace", None)
        if kind.namespaced:
            meta["namespace"] = request.namespace
            if ("", "v1", "namespaces", None, request.namespace) not in self.objects:
                raise _error(404, "NotFound", f'namespaces "{request.namespace}" not found')
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices(GENERATED_SUFFIX_ALPHABET, k=5))
        if not meta.get("name"):
            raise _error(
                422,
                "Invalid",
                f'{kind.kind} "" is invalid: metadata.name: Required value: name or generateName is required',
            )
        key: Key = (kind.group, kind.version, kind.plural, request.namespace, meta["name"])
        if key in self.objects:
            raise _error(
                409,
                "AlreadyExists",
                f'{kind.qualified} "{meta["name"]}" already exists',
                name=meta["name"],
                group=kind.group,
                kind=kind.plural,
            )
        obj.update(apiVersion=kind.api_version, kind=kind.kind)
        if kind.has_status:
            obj.pop("status", None)  # status is written through /status only
            if kind.initial_status:
                obj["status"] = copy.deepcopy(kind.initial_status)
        for server_owned in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(server_owned, None)
        for plugin in self.mutating:
            plugin(self, kind, obj)
        unknown = self._admit(kind, obj, request)
        for plugin in self.validating:
            plugin(self, kind, obj)
        meta.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp=_now())
        if kind.prepare_for_create is not None:
            kind.prepare_for_create(obj)
        return self._store(kind, key, obj, "ADDED"), unknown

    def _patched(self, kind: Kind, key: Key, request: rendering.Request) -> Obj:
        current = self._get(kind, key)
        content_type = request.headers.get("Content-Type", "").split(";")[0]
        try:
            match content_type:
                case "application/json-patch+json":
                    patched: Obj = jsonpatch.apply_patch(current, request.data)
                case "application/merge-patch+json" if isinstance(request.data, dict):
                    patched = _merge_patch(current, request.data)
                case "application/strategic-merge-patch+json" if not kind.is_custom:
                    patched = _merge_patch(current, request.data)  # lists are replaced, not merged by key
                case _:
                    raise _error(
                        415,
                        "UnsupportedMediaType",
                        f"the body of the request was in an unknown format "
                        f"({content_type}) - accepted media types include: application/json-patch+json, "
                        "application/merge-patch+json",
                    )
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise _error(
                422, "Invalid", f"the server rejected our request due to an error in our request: {exc}"
            ) from None
        return patched

    def _update(self, kind: Kind, key: Key, request: rendering.Request, new: Obj) -> tuple[Obj, list[str]]:
        current = self._get(kind, key)
        new = copy.deepcopy(new)  # admission edits in place; stored objects must stay as they are
        given_version = (new.get("metadata") or {}).get("resourceVersion")
        if given_version and given_version != current["metadata"]["resourceVersion"]:
            raise _error(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {kind.qualified} "{key[-1]}": the object '
                "has been modified; please apply your changes to the latest version and try again",
                name=key[-1],
                group=kind.group,
                kind=kind.plural,
            )
        if request.subresource == "status":
            new = {**_without(current, "status"), **({"status": new["status"]} if new.get("status") else {})}
        elif kind.has_status:
            new = {
                **_without(new, "status"),
                **({"status": current["status"]} if "status" in current else {}),
            }
        server_owned = {
            field: current["metadata"][field]
            for field in ("name", "namespace", "uid", "creationTimestamp", "generation", "deletionTimestamp")
            if field in current["metadata"]
        }
        new["metadata"] = {**_without(new.get("metadata") or {}, "deletionTimestamp"), **server_owned}
        new.update(apiVersion=kind.api_version, kind=kind.kind)
        unknown = self._admit(kind, new, request)
        new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if new == current:
            return current, unknown  # a no-op write changes nothing, not even the resourceVersion
        content = ("metadata", "status") if kind.has_status else ("metadata",)
        if _without(new, *content) != _without(current, *content):
            new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return self._remove(kind, key, last=new), unknown  # the last finalizer is gone
        return self._store(kind, key, new, "MODIFIED"), unknown

    @staticmethod
    def _propagation(kind: Kind, request: rendering.Request) -> str:
        """A DELETE's propagationPolicy (query or DeleteOptions body), else the kind's default."""
        body = request.data if isinstance(request.data, dict) else {}
        policy = request.params.get("propagationPolicy") or body.get("propagationPolicy")
        orphan = request.params.get("orphanDependents", body.get("orphanDependents"))
        if policy:
            return str(policy)
        if orphan is not None:
            return "Orphan" if str(orphan).lower() == "true" else "Background"
        return "Orphan" if kind.orphans_by_default else "Background"

    def _delete(self, key: Key, propagation: str = "Background") -> Obj:
        kind = self.kinds[key[:3]]
        current = self._get(kind, key)
        if propagation == "Orphan":  # the garbage collector's orphan finalizer, done at once
            self._orphan(current["metadata"]["uid"])
        if not current["metadata"].get("finalizers"):
            return self._remove(kind, key, last=current)
        if current["metadata"].get("deletionTimestamp"):
            return current
        marked = copy.deepcopy(current)
        marked["metadata"].update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
        return self._store(kind, key, marked, "MODIFIED")

    def _orphan(self, owner_uid: str) -> None:
        """Take the owner out of its dependents' ownerReferences, as the garbage collector does."""
        for other_key, obj in list(self.objects.items()):
            owners = obj["metadata"].get("ownerReferences") or []
            if any(owner.get("uid") == owner_uid for owner in owners):
                orphaned = copy.deepcopy(obj)
                kept = [owner for owner in owners if owner.get("uid") != owner_uid]
                if kept:
                    orphaned["metadata"]["ownerReferences"] = kept
                else:
                    del orphaned["metadata"]["ownerReferences"]
                self._store(self.kinds[other_key[:3]], other_key, orphaned, "MODIFIED")

    def _remove(self, kind: Kind, key: Key, last: Obj) -> Obj:
        """Remove for good, then collect what it owned (and, for a namespace, what was in it)."""
        del self.objects[key]
        removed = self._record(kind, "DELETED", copy.deepcopy(last))
        live_uids = {obj["metadata"]["uid"] for obj in self.objects.values()}
        for other_key, obj in list(self.objects.items()):
            if other_key not in self.objects or "deletionTimestamp" in obj["metadata"]:
                continue
            owners = obj["metadata"].get("ownerReferences") or []
            orphaned = owners and not any(owner.get("uid") in live_uids for owner in owners)
            if orphaned or (kind.plural == "namespaces" and other_key[3] == key[-1]):
                self._delete(other_key)
        return removed
