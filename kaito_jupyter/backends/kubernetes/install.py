"""`kaito install`: the Workspace CRD, installed when the cluster has none.

Done on first use when the user may create CRDs; otherwise a clear error naming the RBAC it
needs (or the admin's one command). Kaito's own CRD, when present, is left alone: kaito-jupyter
then talks to it as any client would. Our own CRD is upgraded when this version's schema is
newer.
"""

from __future__ import annotations

import threading
from importlib import resources
from typing import Any

from kaito_jupyter.backends.kubernetes import crd
from kaito_jupyter.backends.kubernetes.kube import CRD, ApiError, Kube
from kaito_jupyter.errors import BackendError

CRD_RBAC = (
    "apiGroups: [apiextensions.k8s.io], resources: [customresourcedefinitions], "
    "verbs: [get, create, patch]"
)


def manifest(name: str) -> str:
    """One of the shipped RBAC manifests (deploy/controller-rbac.yaml, deploy/user-rbac.yaml)."""
    return resources.files("kaito_jupyter.backends.kubernetes").joinpath("deploy", name).read_text()


def state(kube: Kube) -> tuple[str, dict[str, Any] | None]:
    """("absent" | "ours" | "kaito" | "present" (unreadable), the CRD)."""
    try:
        found = kube.find(CRD, crd.NAME)
    except ApiError as exc:
        if exc.status == 403:
            # Cannot read CRDs: whether the Workspace API is served tells absent from present
            try:
                kube.request(
                    "GET", f"/apis/{crd.definition()['spec']['group']}/{crd.STORED_VERSION}"
                )
                return "present", None
            except ApiError:
                return "absent", None
        raise
    if found is None:
        return "absent", None
    return ("ours" if crd.is_ours(found) else "kaito"), found


def _established(obj: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Established" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def _wait_established(kube: Kube, timeout: float = 60) -> None:
    """Wait on a watch of the CRD (no polling) until the API server serves it."""
    from kubernetes import watch

    current = kube.get(CRD, crd.NAME)
    if _established(current):
        return
    done = threading.Event()
    w = watch.Watch(return_type="object")
    timer = threading.Timer(timeout, w.stop)
    timer.start()

    def call(**kwargs):
        resp = kube._call(
            "GET",
            CRD.path(),
            query=[
                ("watch", "true"),
                ("fieldSelector", f"metadata.name={crd.NAME}"),
                ("resourceVersion", current["metadata"]["resourceVersion"]),
            ],
            timeout=(10, None),
        )
        return resp.response

    try:
        for event in w.stream(call, timeout_seconds=int(timeout)):
            if _established(event["raw_object"]):
                done.set()
                break
    finally:
        timer.cancel()
        w.stop()
    if not done.is_set() and not _established(kube.get(CRD, crd.NAME)):
        raise BackendError(
            f"the CRD {crd.NAME} was created but is not Established after {timeout:g}s",
            hint=f"kubectl describe crd {crd.NAME}",
        )


def permission_error(kube: Kube, what: str) -> BackendError:
    return BackendError(
        f"the Workspace CRD ({crd.NAME}) is {what}, and this identity (context "
        f"{kube.context or '?'}) may not install it",
        hint=(
            f"ask a cluster admin to run `kaito install` once, or grant {CRD_RBAC} "
            "(kaito_jupyter/backends/kubernetes/deploy/controller-rbac.yaml has the ClusterRole)"
        ),
    )


def install(kube: Kube, *, dry_run: bool = False, force: bool = False) -> str:
    """Install or upgrade our CRD (`force`: apply it even when current). Returns what
    happened, for people."""
    kind, found = state(kube)
    if kind == "present" and not force:
        return f"the Workspace CRD ({crd.NAME}) is installed"
    if kind == "kaito":
        return f"Kaito's own Workspace CRD is installed ({crd.NAME}); kaito-jupyter uses it as is"
    wanted = crd.definition()
    if kind == "ours" and found is not None:
        revision = ((found.get("metadata") or {}).get("annotations") or {}).get(
            crd.SCHEMA_REVISION_ANNOTATION
        )
        if revision == crd.SCHEMA_REVISION and not force:
            return f"the Workspace CRD ({crd.NAME}) is installed and current"
    try:
        kube.apply(wanted, dry_run=dry_run)
    except ApiError as exc:
        if exc.status == 403:
            raise permission_error(
                kube, "not installed" if kind == "absent" else "out of date"
            ) from None
        raise
    if dry_run:
        return (
            f"would {'install' if kind == 'absent' else 'upgrade'} the Workspace CRD ({crd.NAME})"
        )
    _wait_established(kube)
    return f"{'installed' if kind == 'absent' else 'upgraded'} the Workspace CRD ({crd.NAME})"


def ensure(kube: Kube) -> None:
    """First use: install when absent (a clear error without permission); else nothing."""
    kind, _ = state(kube)
    if kind == "absent":
        install(kube)
