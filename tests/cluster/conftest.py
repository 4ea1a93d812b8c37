"""Fixtures for the kubernetes backend on the test bed: one CRD install and one controller per
session (reconciling every namespace except those named `solo-*`, which tests that run their
own controllers use), a fresh namespace per test, and waits that ride a watch, not a sleep."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import pytest

from kaito_jupyter import config
from kaito_jupyter.backends.kubernetes.backend import KubernetesBackend
from kaito_jupyter.backends.kubernetes.informer import Informer
from kaito_jupyter.backends.kubernetes.install import install
from kaito_jupyter.backends.kubernetes.kube import NAMESPACE, Kind, Kube

LEASE_NAMESPACE = "kube-system"


@pytest.fixture(scope="session")
def kube(testbed) -> Kube:
    k = Kube(str(testbed.kubeconfig))
    yield k
    k.close()


@pytest.fixture(scope="session")
def crd_installed(kube) -> str:
    return install(kube)


def settings_for(testbed, namespace: str = "default") -> config.Settings:
    # byo: these tests label KWOK nodes themselves (auto would pick nodeclaim wherever a test
    # of the provisioners installed its CRD into the shared bed).
    s = config.Settings(
        backend="kubernetes",
        kubeconfig=str(testbed.kubeconfig),
        namespace=namespace,
        provisioner="byo",
    )
    s.kubernetes.lease_namespace = LEASE_NAMESPACE
    return s


def make_controller(kube: Kube, testbed, **options):
    backend = KubernetesBackend(settings_for(testbed), kube=kube)
    options.setdefault("namespace", None)
    options.setdefault("lease_duration", 4.0)
    options.setdefault("renew_deadline", 3.0)
    options.setdefault("retry_period", 0.5)
    return backend.controller(**options)


@pytest.fixture(scope="session")
def controller(kube, testbed, crd_installed):
    c = make_controller(
        kube, testbed, accept=lambda ns: not ns.startswith("solo-"), name="session-controller"
    )
    c.start()
    assert c.elector.leading.wait(30), "the session controller never took its Lease"
    yield c
    c.stop()


def new_namespace(kube: Kube, prefix: str = "t") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    kube.create(NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


@pytest.fixture
def namespace(kube) -> str:
    return new_namespace(kube)


@pytest.fixture
def backend(kube, testbed, namespace, crd_installed) -> KubernetesBackend:
    return KubernetesBackend(settings_for(testbed, namespace), kube=kube)


def wait_for(
    kube: Kube,
    kind: Kind,
    namespace: str | None,
    predicate: Callable[[dict[str, dict]], object],
    *,
    timeout: float = 60,
    what: str = "condition",
    label_selector: str | None = None,
):
    """Wait until `predicate(objects by name)` is truthy, re-checked on every watch event."""
    done = threading.Event()
    result: list = []
    informer = Informer(
        kube, kind, namespace, label_selector=label_selector, name=f"wait-{kind.plural}"
    )

    def check(_type=None, _obj=None):
        if done.is_set():
            return
        objects = {o["metadata"]["name"]: o for o in informer.items()}
        value = predicate(objects)
        if value:
            result.append(value)
            done.set()

    informer.add_handler(check)
    informer.start()
    try:
        informer.synced.wait(timeout)
        check()
        if not done.wait(timeout):
            objects = {o["metadata"]["name"]: o for o in informer.items()}
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what}; last seen: {_brief(objects)}"
            )
        return result[0]
    finally:
        informer.stop()


def _brief(objects: dict[str, dict]) -> str:
    out = []
    for name, o in objects.items():
        st = o.get("status") or {}
        conds = {
            c.get("type"): (c.get("status"), c.get("reason"), c.get("message"))
            for c in st.get("conditions") or []
        }
        out.append(f"{name}: state={st.get('state')} {conds}")
    return "; ".join(out) or "(nothing)"


def condition(obj: dict | None, type_: str) -> str | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c.get("status")
    return None
