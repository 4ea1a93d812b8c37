"""`KubernetesBackend`: workspaces as `kaito.sh` Workspace custom resources.

Writes are server-side applies as `kaito-jupyter`, dry-run first so a multi-document apply is
all or none and the API server's own refusals (the CRD's CEL rules) come back as validation
errors naming the field. Reads keep the object as stored (unknown fields included).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

from kaito_jupyter import config
from kaito_jupyter.api.wire import StoredWorkspace
from kaito_jupyter.backends.base import Applied, Endpoint, Event, Node, NotFound, WatchEvent
from kaito_jupyter.backends.kubernetes import install
from kaito_jupyter.backends.kubernetes.informer import Informer
from kaito_jupyter.backends.kubernetes.kube import (
    DEPLOYMENT,
    EVENT,
    LEASE,
    NODE,
    POD,
    SERVICE,
    WORKSPACE,
    ApiError,
    Kube,
)
from kaito_jupyter.controller.lease import holder_of
from kaito_jupyter.controller.plan import WORKSPACE_LABEL
from kaito_jupyter.errors import BackendError, Issue, ValidationError

log = logging.getLogger(__name__)

GPU = "nvidia.com/gpu"
# How Kaito's operator shows itself: its Helm chart's Deployment and labels.
KAITO_OPERATOR_SELECTORS = (
    "app.kubernetes.io/name=workspace",
    "app.kubernetes.io/name=kaito-workspace",
)


def _refusal(exc: ApiError, doc: dict[str, Any]) -> ValidationError:
    """The API server's 422 (schema or CEL) as our validation error, field by field."""
    causes = exc.details.get("causes") or []
    issues = [
        Issue(
            path=str(c.get("field") or "").removeprefix("spec."),
            message=str(c.get("message") or exc.message),
        )
        for c in causes
    ] or [Issue(path="", message=exc.message)]
    name = (doc.get("metadata") or {}).get("name", "?")
    return ValidationError(
        [Issue(i.path, f"the API server refused workspace {name}: {i.message}") for i in issues]
    )


def _users_part(obj: dict[str, Any]) -> tuple:
    """What an apply may change: the spec (its generation: the status subresource keeps status
    writes from bumping it), labels and annotations. The controller's own writes (status,
    finalizers) happening meanwhile do not make an apply "configured"."""
    meta = obj.get("metadata") or {}
    return (meta.get("generation"), meta.get("labels") or {}, meta.get("annotations") or {})


class KubernetesBackend:
    name = "kubernetes"

    def __init__(self, settings: config.Settings | None = None, *, kube: Kube | None = None):
        self.settings = settings or config.load()
        if kube is None:
            from kaito_jupyter.provisioners.azure_client import kubeconfig_from_coordinates

            # No kubeconfig anywhere, but an AKS cluster's coordinates: ask ARM for one.
            kubeconfig = self.settings.kubeconfig or kubeconfig_from_coordinates(self.settings)
            kube = Kube(kubeconfig, self.settings.context, self.settings.namespace)
        self.kube = kube
        self.namespace = self.settings.namespace or self.kube.namespace
        self._crd_checked = False

    # -- who we are ---------------------------------------------------------------------------

    def target(self) -> str:
        return f"kubernetes (context {self.kube.context or '?'}, namespace {self.namespace})"

    def admission_issues(self, data: dict) -> list[Issue]:
        return []  # the API server's schema and CEL rules run at apply; the catalog's in admission

    def _ns(self, namespace: str | None) -> str:
        return namespace or self.namespace

    def ensure_crd(self) -> None:
        if self._crd_checked:
            return
        kind, _ = install.state(self.kube)
        if kind == "absent":
            if not self.settings.kubernetes.install_crd:
                raise BackendError(
                    f"the Workspace CRD ({install.crd.NAME}) is not installed",
                    hint="run `kaito install` (or set kubernetes.install_crd: true in kaito.yaml)",
                )
            install.install(self.kube)
        self._crd_checked = True

    # -- workspaces ---------------------------------------------------------------------------

    def apply(self, documents: list[dict], *, dry_run: bool = False) -> list[Applied]:
        self.ensure_crd()
        docs = []
        for doc in documents:
            doc = dict(doc)
            meta = dict(doc.get("metadata") or {})
            meta.setdefault("namespace", self.namespace)
            doc["metadata"] = meta
            docs.append(doc)
        before = {}
        for doc in docs:  # the server checks every document before any is written
            meta = doc["metadata"]
            before[(meta["namespace"], meta["name"])] = self.kube.find(
                WORKSPACE, meta["name"], meta["namespace"]
            )
            try:
                self.kube.apply(doc, dry_run=True)
            except ApiError as exc:
                if exc.status == 422:
                    raise _refusal(exc, doc) from None
                raise
        out = []
        for doc in docs:
            meta = doc["metadata"]
            old = before[(meta["namespace"], meta["name"])]
            try:
                new = self.kube.apply(doc, dry_run=dry_run)
            except ApiError as exc:
                if exc.status == 422:
                    raise _refusal(exc, doc) from None
                raise
            if old is None:
                action = "created"
            elif _users_part(old) == _users_part(new):
                action = "unchanged"
            else:
                action = "configured"
            out.append(Applied(StoredWorkspace(new), action))  # type: ignore[arg-type]
        return out

    def get(self, name: str, namespace: str | None = None) -> StoredWorkspace:
        ns = self._ns(namespace)
        try:
            obj = self.kube.find(WORKSPACE, name, ns)
        except ApiError as exc:
            if exc.status == 404:  # the CRD itself is absent: no workspace exists
                raise NotFound(name, ns) from None
            raise
        if obj is None:
            raise NotFound(name, ns, where=self.target())
        return StoredWorkspace(obj)

    def list(self, namespace: str | None = None) -> list[StoredWorkspace]:
        try:
            items = self.kube.list(WORKSPACE, self._ns(namespace)).get("items") or []
        except ApiError as exc:
            if exc.status == 404:
                return []
            raise
        return [StoredWorkspace(i) for i in sorted(items, key=lambda o: o["metadata"]["name"])]

    def delete(self, name: str, namespace: str | None = None) -> StoredWorkspace:
        stored = self.get(name, namespace)
        self.kube.delete(WORKSPACE, name, stored.namespace, propagation="Background")
        return (
            self.get(name, namespace)
            if self.kube.find(WORKSPACE, name, stored.namespace)
            else stored
        )

    def watch(
        self, namespace: str | None = None, *, stop: threading.Event | None = None
    ) -> Iterator[WatchEvent]:
        """Every workspace as ADDED, then each change. The first list is made here, before
        this returns, so whatever a caller reads after calling watch() it sees changes of."""
        stop = stop or threading.Event()
        events: queue.Queue = queue.Queue()
        informer = Informer(self.kube, WORKSPACE, self._ns(namespace), name="backend-watch")
        informer.add_handler(lambda t, obj: events.put((t, obj)))
        try:
            informer.start(list_first=True)
        except ApiError as exc:
            if exc.status != 404:  # no CRD yet: no workspaces, and the watch starts empty
                raise
            informer.start()
        return self._drain(informer, events, stop)

    @staticmethod
    def _drain(informer: Informer, events: queue.Queue, stop: threading.Event):
        try:
            while not stop.is_set():
                try:
                    type_, obj = events.get(timeout=0.25)
                except queue.Empty:
                    continue
                yield WatchEvent(type_, StoredWorkspace(obj))
        finally:
            informer.stop()

    # -- what happened ------------------------------------------------------------------------

    def events(self, name: str, namespace: str | None = None) -> list[Event]:
        ns = self._ns(namespace)
        items = self.kube.list(EVENT, ns).get("items") or []
        out = []
        for e in items:
            obj = e.get("involvedObject") or {}
            mine = obj.get("kind") == "Workspace" and obj.get("name") == name
            child = obj.get("kind") in (
                "Pod",
                "Deployment",
                "StatefulSet",
                "Job",
                "ReplicaSet",
                "Service",
            ) and (obj.get("name") == name or str(obj.get("name", "")).startswith(name + "-"))
            if not (mine or child):
                continue
            out.append(
                Event(
                    time=e.get("lastTimestamp")
                    or e.get("eventTime")
                    or (e.get("metadata") or {}).get("creationTimestamp")
                    or "",
                    type="Warning" if e.get("type") == "Warning" else "Normal",
                    reason=e.get("reason") or "",
                    message=e.get("message") or "",
                    object=f"{obj.get('kind')}/{obj.get('name')}",
                    count=int(e.get("count") or 1),
                )
            )
        return sorted(out, key=lambda e: e.time)

    def _pods(self, name: str, ns: str) -> list[dict]:
        pods = (
            self.kube.list(POD, ns, label_selector=f"{WORKSPACE_LABEL}={name}").get("items") or []
        )
        return sorted(pods, key=lambda p: p["metadata"]["name"])

    def logs(self, name, namespace=None, *, follow=False, tail=None, stop=None) -> Iterator[str]:
        ns = self._ns(namespace)
        self.get(name, ns)
        pods = self._pods(name, ns)
        if not pods:
            raise BackendError(f"workspace {name} has no pods yet", hint=f"kaito describe {name}")
        pod = next((p for p in pods if p["metadata"]["name"] == f"{name}-0"), pods[0])
        container = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("name")
        query = [
            ("container", container),
            ("follow", "true" if follow else None),
            ("tailLines", tail),
        ]
        for line in self.kube.stream(
            POD.path(ns, pod["metadata"]["name"], "log"), query=query, timeout=(10, None)
        ):
            if stop is not None and stop.is_set():
                return
            yield line.decode(errors="replace")

    def nodes(self) -> list[Node]:
        from kaito_jupyter import catalog

        items = self.kube.list(NODE).get("items") or []
        used: dict[str, int] = {}
        placed: dict[str, set[str]] = {}
        try:
            pods = (
                self.kube.list(
                    POD, field_selector="status.phase!=Succeeded,status.phase!=Failed"
                ).get("items")
                or []
            )
        except ApiError:
            pods = []
        for p in pods:
            node = (p.get("spec") or {}).get("nodeName")
            if not node:
                continue
            for cont in (p.get("spec") or {}).get("containers") or []:
                used[node] = used.get(node, 0) + int(
                    ((cont.get("resources") or {}).get("requests") or {}).get(GPU) or 0
                )
            ws = ((p.get("metadata") or {}).get("labels") or {}).get(WORKSPACE_LABEL)
            if ws:
                placed.setdefault(node, set()).add(f"{p['metadata'].get('namespace')}/{ws}")
        out = []
        for n in items:
            alloc = int(((n.get("status") or {}).get("allocatable") or {}).get(GPU) or 0)
            if not alloc:
                continue
            labels = (n.get("metadata") or {}).get("labels") or {}
            itype = labels.get("node.kubernetes.io/instance-type")
            sku = catalog.find_sku(itype) if itype else None
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (n.get("status") or {}).get("conditions") or []
            )
            name = n["metadata"]["name"]
            out.append(
                Node(
                    name=name,
                    instance_type=itype,
                    gpu_model=sku.gpu_model if sku else labels.get("nvidia.com/gpu.product"),
                    gpus=alloc,
                    gpus_used=used.get(name, 0),
                    gpu_memory_gib=sku.gpu_memory_gib if sku else None,
                    ready=ready,
                    workspaces=tuple(sorted(placed.get(name, ()))),
                    price_per_hour=sku.price_per_hour if sku else None,
                    labels=dict(labels),
                    created=n["metadata"].get("creationTimestamp"),
                )
            )
        return sorted(out, key=lambda n: n.name)

    def endpoint(self, name: str, namespace: str | None = None) -> Endpoint:
        """Through the API server's service proxy: the user's own credentials and the cluster's
        CA, so chat works from a laptop with nothing but a kubeconfig."""
        stored = self.get(name, namespace)
        if self.kube.find(SERVICE, name, stored.namespace) is None:
            raise BackendError(
                f"workspace {name} has no Service yet: it is not serving",
                hint=f"`kaito wait {name}` waits for InferenceReady",
            )
        url = f"{self.kube.host}{SERVICE.path(stored.namespace, name)}:http/proxy"
        ws = stored.workspace
        return Endpoint(
            url=url,
            headers=self.kube.auth_headers(),
            ssl_context=self.kube.ssl_context(),
            model=ws.preset_name or name,
        )

    # -- the controller -----------------------------------------------------------------------

    def kaito_operator(self) -> str | None:
        """namespace/name of Kaito's own workspace operator when it runs in the cluster."""
        for selector in KAITO_OPERATOR_SELECTORS:
            try:
                found = self.kube.list(DEPLOYMENT, label_selector=selector).get("items") or []
            except ApiError:
                return None  # cannot tell without list rights on deployments
            for d in found:
                if int((d.get("status") or {}).get("availableReplicas") or 0) > 0:
                    return f"{d['metadata']['namespace']}/{d['metadata']['name']}"
        return None

    def ensure_controller(self) -> str | None:
        operator = self.kaito_operator()
        if operator:
            return (
                f"Kaito's operator ({operator}) reconciles workspaces in this cluster: "
                "kaito-jupyter acts as its client and does not reconcile"
            )
        try:
            lease = self.kube.find(
                LEASE, "kaito-jupyter-controller", self.settings.kubernetes.lease_namespace
            )
        except ApiError:
            lease = None
        from datetime import UTC, datetime

        holder = holder_of(lease)
        if holder.identity and not holder.expired(datetime.now(UTC)):
            return None
        return (
            "no controller reconciles workspaces in this cluster yet: run `kaito controller "
            "--backend kubernetes` (or the Jupyter server extension) against it"
        )

    def controller(self, **options):
        from kaito_jupyter.backends.kubernetes.controller import Controller
        from kaito_jupyter.backends.kubernetes.render import RenderOptions
        from kaito_jupyter.provisioners import select

        k8s = self.settings.kubernetes
        render = RenderOptions(runtime_image=k8s.runtime_image, **options.pop("render", {}))
        factory = options.pop("provisioner_factory", None) or (
            lambda list_nodes: select(self.settings, self.kube, list_nodes=list_nodes)
        )
        return Controller(
            self.kube,
            factory,
            lease_namespace=options.pop("lease_namespace", k8s.lease_namespace),
            options=render,
            kaito_runtime=k8s.kaito_runtime,
            **options,
        )

    def run_controller(self, *, stop: threading.Event | None = None, **options) -> str | None:
        """`kaito controller --backend kubernetes`: reconcile until `stop` (or interrupted)."""
        self.ensure_crd()
        operator = self.kaito_operator()
        if operator:
            return f"Kaito's operator ({operator}) reconciles this cluster; not starting a second reconciler"
        self.controller(**options).run_forever(stop)
        return None
