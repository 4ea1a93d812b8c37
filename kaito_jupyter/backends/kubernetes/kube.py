"""The cluster connection: the `kubernetes` client's configuration, and a small REST layer over
it that speaks plain dicts.

Why dicts and not the client's typed models: a Workspace read from a cluster must keep every
field it holds (newer Kaito versions add some), and server-side apply wants the exact object we
rendered, not one re-serialised through models that drop unknown fields. The client still does
the work that matters: kubeconfig and in-cluster loading, TLS, auth refresh, and the watch.
"""

from __future__ import annotations

import json
import os
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

from kaito_jupyter.errors import BackendError

FIELD_MANAGER = "kaito-jupyter"

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the REST API."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, sub: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
        if sub:
            base += f"/{sub}"
        return base


WORKSPACE = Kind("kaito.sh", "v1beta1", "workspaces", "Workspace")
POD = Kind("", "v1", "pods", "Pod")
SERVICE = Kind("", "v1", "services", "Service")
NODE = Kind("", "v1", "nodes", "Node", namespaced=False)
EVENT = Kind("", "v1", "events", "Event")
SECRET = Kind("", "v1", "secrets", "Secret")
NAMESPACE = Kind("", "v1", "namespaces", "Namespace", namespaced=False)
DEPLOYMENT = Kind("apps", "v1", "deployments", "Deployment")
STATEFULSET = Kind("apps", "v1", "statefulsets", "StatefulSet")
JOB = Kind("batch", "v1", "jobs", "Job")
LEASE = Kind("coordination.k8s.io", "v1", "leases", "Lease")
CRD = Kind(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False
)
SELF_SUBJECT_ACCESS_REVIEW = Kind(
    "authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False
)
KINDS = {
    k.kind: k
    for k in (
        WORKSPACE,
        POD,
        SERVICE,
        NODE,
        EVENT,
        SECRET,
        DEPLOYMENT,
        STATEFULSET,
        JOB,
        LEASE,
        CRD,
    )
}


class ApiError(BackendError):
    """The API server answered with an error status; `status` and `reason` are its own."""

    def __init__(self, status: int, reason: str, message: str, *, details: dict | None = None):
        super().__init__(message or reason or f"HTTP {status}", hint=None)
        self.status = status
        self.reason = reason
        self.details = details or {}


def _error(exc: Exception) -> ApiError:
    status = getattr(exc, "status", 0) or 0
    body = getattr(exc, "body", None) or getattr(exc, "data", None)
    reason, message, details = getattr(exc, "reason", "") or "", "", {}
    if body:
        try:
            parsed = json.loads(body)
            reason = parsed.get("reason") or reason
            message = parsed.get("message") or ""
            details = parsed.get("details") or {}
        except (ValueError, AttributeError, TypeError):
            message = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    if not status:
        message = f"cannot reach the Kubernetes API server: {reason or exc}"
    error = ApiError(status, str(reason), message, details=details)
    if status == 403:
        error.hint = (
            "this identity lacks the RBAC for it: kaito_jupyter/backends/kubernetes/deploy/ "
            "has the roles (user-rbac.yaml for notebook users, controller-rbac.yaml for the controller)"
        )
    return error


class Kube:
    """One connection to one cluster (thread-safe: urllib3 pools connections)."""

    def __init__(
        self,
        kubeconfig: str | None = None,
        context: str | None = None,
        namespace: str | None = None,
    ):
        from kubernetes import client, config

        self._lock = threading.Lock()
        self.context = context
        in_cluster = not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST")
        try:
            if in_cluster:
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                self.api = client.ApiClient(configuration)
                self.context = "in-cluster"
            else:
                path = (kubeconfig or os.path.expanduser("~/.kube/config")).split(os.pathsep)[0]
                self.api = config.new_client_from_config(config_file=path, context=context)
                if not self.context:
                    _, active = config.list_kube_config_contexts(config_file=path)
                    self.context = (active or {}).get("name")
        except config.ConfigException as exc:
            raise BackendError(
                f"no usable Kubernetes configuration: {exc}",
                hint="set KUBECONFIG (or `kubeconfig:` in kaito.yaml), or run inside a cluster",
            ) from exc
        except FileNotFoundError as exc:
            raise BackendError(
                f"kubeconfig {exc.filename} does not exist",
                hint="set KUBECONFIG to your cluster's kubeconfig",
            ) from exc
        self.namespace = namespace or "default"
        self.api.user_agent = "kaito-jupyter"

    @property
    def configuration(self):
        return self.api.configuration

    def close(self) -> None:
        self.api.close()

    def widen_pool(self, size: int) -> None:
        """Keep at least `size` connections open for reuse (the client's default is 5 per
        core: fewer than a controller's watches plus its workers)."""
        from kubernetes.client import rest

        cfg = self.api.configuration
        if (cfg.connection_pool_maxsize or 0) >= size:
            return
        with self._lock:
            cfg.connection_pool_maxsize = size
            # Requests in flight on the old pool finish on it (it is not closed under them).
            self.api.rest_client = rest.RESTClientObject(cfg)

    # -- REST ---------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | tuple[float, float] | None = 30,
        accept: str = "application/json",
    ):
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": accept, "Content-Type": content_type}
        # The REST layer JSON-encodes bodies of JSON content types itself; apply's YAML type
        # goes as the string we give it (JSON is YAML).
        encoded = body if body is None or "json" in content_type else json.dumps(body)
        try:
            method_, url, headers_, _, post = self.api.param_serialize(
                method=method,
                resource_path=path,
                query_params=[(k, v) for k, v in query or [] if v is not None],
                header_params=headers,
                auth_settings=["BearerToken"],
            )
            resp = self.api.call_api(
                method_, url, headers_, encoded, post, _request_timeout=timeout
            )
        except ApiException as exc:
            raise _error(exc) from None
        except Exception as exc:  # urllib3 connection errors
            if exc.__class__.__module__.startswith(("urllib3", "ssl", "socket")) or isinstance(
                exc, OSError
            ):
                raise ApiError(
                    0, "Unreachable", f"cannot reach the Kubernetes API server: {exc}"
                ) from None
            raise
        return resp

    def request(self, method: str, path: str, **kwargs) -> dict[str, Any]:
        resp = self._call(method, path, **kwargs)
        data = resp.read()
        if not 200 <= resp.status <= 299:
            exc = type("E", (), {"status": resp.status, "body": data, "reason": resp.reason})()
            raise _error(exc)
        return json.loads(data) if data else {}

    def stream(
        self, path: str, *, query: list[tuple[str, Any]] | None = None, timeout=None
    ) -> Iterator[bytes]:
        """A long-lived GET's body, line by line (logs)."""
        resp = self._call("GET", path, query=query, timeout=timeout)
        raw = resp.response
        if not 200 <= resp.status <= 299:
            data = raw.read()
            exc = type("E", (), {"status": resp.status, "body": data, "reason": resp.reason})()
            raise _error(exc)
        try:
            buffer = b""
            for chunk in raw.stream(4096, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    yield line
            if buffer:
                yield buffer
        finally:
            raw.release_conn()

    # -- verbs --------------------------------------------------------------------------------

    def get(self, kind: Kind, name: str, namespace: str | None = None, sub: str = "") -> dict:
        return self.request("GET", kind.path(namespace, name, sub))

    def find(self, kind: Kind, name: str, namespace: str | None = None) -> dict | None:
        try:
            return self.get(kind, name, namespace)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self,
        kind: Kind,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> dict:
        return self.request(
            "GET",
            kind.path(namespace),
            query=[("labelSelector", label_selector), ("fieldSelector", field_selector)],
        )

    def create(
        self, kind: Kind, obj: dict, namespace: str | None = None, *, dry_run: bool = False
    ) -> dict:
        return self.request(
            "POST",
            kind.path(namespace),
            body=obj,
            query=[("fieldManager", FIELD_MANAGER), ("dryRun", "All" if dry_run else None)],
        )

    def apply(self, obj: dict, *, dry_run: bool = False, force: bool = True, sub: str = "") -> dict:
        """Server-side apply as `kaito-jupyter` (force: we own what we render)."""
        kind = KINDS[obj["kind"]]
        group, _, version = str(obj.get("apiVersion") or "").rpartition("/")
        if group == kind.group and version and version != kind.version:
            kind = replace(kind, version=version)  # apply as the version the object is written in
        meta = obj["metadata"]
        return self.request(
            "PATCH",
            kind.path(meta.get("namespace"), meta["name"], sub),
            body=obj,
            content_type=APPLY,
            query=[
                ("fieldManager", FIELD_MANAGER),
                ("force", "true" if force else None),
                ("fieldValidation", "Strict"),
                ("dryRun", "All" if dry_run else None),
            ],
        )

    def patch(
        self,
        kind: Kind,
        name: str,
        namespace: str | None,
        body: Any,
        *,
        content_type: str = MERGE,
        sub: str = "",
    ) -> dict:
        return self.request(
            "PATCH",
            kind.path(namespace, name, sub),
            body=body,
            content_type=content_type,
            query=[("fieldManager", FIELD_MANAGER)],
        )

    def delete(
        self,
        kind: Kind,
        name: str,
        namespace: str | None = None,
        *,
        propagation: str = "Background",
        precondition_uid: str | None = None,
    ) -> dict | None:
        body: dict[str, Any] = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": propagation,
        }
        if precondition_uid:
            body["preconditions"] = {"uid": precondition_uid}
        try:
            return self.request("DELETE", kind.path(namespace, name), body=body)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def can_i(
        self, verb: str, resource: str, group: str = "", namespace: str | None = None
    ) -> bool:
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "verb": verb,
                    "resource": resource,
                    "group": group,
                    **({"namespace": namespace} if namespace else {}),
                }
            },
        }
        out = self.request("POST", SELF_SUBJECT_ACCESS_REVIEW.path(), body=review)
        return bool((out.get("status") or {}).get("allowed"))

    # -- what the endpoint needs --------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.configuration.host.rstrip("/")

    def auth_headers(self) -> dict[str, str]:
        """The credentials a request through the API server's service proxy carries."""
        self.configuration.refresh_api_key_hook and self.configuration.refresh_api_key_hook(
            self.configuration
        )
        token = self.configuration.get_api_key_with_prefix("BearerToken") or (
            self.configuration.api_key or {}
        ).get("authorization")
        return {"Authorization": token} if token else {}

    def ssl_context(self) -> ssl.SSLContext:
        """TLS to the API server: its CA from the kubeconfig, and a client certificate if any."""
        cfg = self.configuration
        ctx = (
            ssl.create_default_context(cafile=cfg.ssl_ca_cert)
            if cfg.ssl_ca_cert
            else ssl.create_default_context()
        )
        if not cfg.verify_ssl:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cfg.cert_file and cfg.key_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        return ctx


def temp_kubeconfig(server: str, ca_pem: bytes, token: str) -> str:
    """A kubeconfig file for one bearer token (a service account's), for tools and tests."""
    import base64

    import yaml

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    fd, path = tempfile.mkstemp(prefix="kaito-kubeconfig-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f)
    return path
