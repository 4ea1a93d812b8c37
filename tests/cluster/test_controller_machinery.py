"""The controller's machinery against the real API server: the informer's resume and 410
handling, one leader of two by a real Lease and a takeover when it dies, the reconciler killed
at random points converging with no duplicates, and the RBAC error of a user who may not
install the CRD."""

from __future__ import annotations

import contextlib
import random
import threading
import uuid

import pytest

from kaito_jupyter.backends.kubernetes.backend import KubernetesBackend
from kaito_jupyter.backends.kubernetes.events import Recorder
from kaito_jupyter.backends.kubernetes.informer import Informer
from kaito_jupyter.backends.kubernetes.install import install
from kaito_jupyter.backends.kubernetes.kube import (
    DEPLOYMENT,
    LEASE,
    POD,
    SERVICE,
    WORKSPACE,
    Kind,
    Kube,
    temp_kubeconfig,
)
from kaito_jupyter.backends.kubernetes.reconciler import Reconciler
from kaito_jupyter.controller.plan import FINALIZER
from kaito_jupyter.errors import BackendError
from kaito_jupyter.provisioners import select

from .conftest import condition, new_namespace, settings_for, wait_for
from .test_workspace_controller import pool, readme, with_labels

CONFIGMAP = Kind("", "v1", "configmaps", "ConfigMap")


def _configmap(kube, namespace, name):
    kube.create(
        CONFIGMAP, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}, namespace
    )


# The test bed serves PodTemplates without a watch cache (control_plane.py): from etcd.
PODTEMPLATE = Kind("", "v1", "podtemplates", "PodTemplate")


def _podtemplate(kube, namespace, name):
    template = {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    body = {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": name},
        "template": template,
    }
    kube.create(PODTEMPLATE, body, namespace)


def _recording(informer):
    seen: list[tuple[str, str]] = []
    cond = threading.Condition()

    def handler(type_, obj):
        with cond:
            seen.append((type_, obj["metadata"]["name"]))
            cond.notify_all()

    informer.add_handler(handler)

    def wait(pred, timeout=30):
        with cond:
            assert cond.wait_for(lambda: pred(seen), timeout), f"informer saw {seen}"

    return seen, wait


def test_informer_resumes_a_dropped_watch_from_its_resource_version_without_relisting(kube):
    ns = new_namespace(kube)
    _configmap(kube, ns, "before")
    informer = Informer(kube, CONFIGMAP, ns)
    seen, wait = _recording(informer)
    informer.start()
    try:
        wait(lambda s: ("ADDED", "before") in s)
        assert informer.watching.wait(10)
        watches = informer.watches
        informer.drop_connection()
        _configmap(kube, ns, "after")
        wait(lambda s: ("ADDED", "after") in s)
        assert informer.watches > watches  # a new watch request...
        assert informer.relists == 0  # ...from the last resourceVersion: no list again
        assert seen.count(("ADDED", "before")) == 1  # nothing replayed
    finally:
        informer.stop()


def _compact_etcd(testbed) -> None:
    """Compact etcd to its current revision, as the API server does every few minutes: every
    older resourceVersion is gone."""
    import base64
    import json
    import urllib.request

    url = testbed.control_plane.etcd_url

    def post(path, body):
        req = urllib.request.Request(
            url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    revision = post("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})["header"]["revision"]
    post("/v3/kv/compaction", {"revision": revision, "physical": True})


def test_informer_lists_again_on_410_gone_and_reports_what_changed_meanwhile(kube, testbed):
    ns = new_namespace(kube)
    _podtemplate(kube, ns, "kept")
    _podtemplate(kube, ns, "deleted-meanwhile")
    kube.delete(PODTEMPLATE, "deleted-meanwhile", ns)
    # A process that remembers a cache and a resourceVersion from before etcd's compaction.
    old = kube.list(PODTEMPLATE, ns)["metadata"]["resourceVersion"]
    _podtemplate(kube, ns, "added-meanwhile")
    _podtemplate(kube, ns, "added-meanwhile-too")  # etcd keeps the revision it compacts at
    _compact_etcd(testbed)
    informer = Informer(kube, PODTEMPLATE, ns)
    informer.cache = {
        (ns, name): {"metadata": {"name": name, "namespace": ns, "resourceVersion": old}}
        for name in ("kept", "deleted-meanwhile")
    }
    seen, wait = _recording(informer)
    informer.start(resource_version=old)
    try:
        wait(lambda s: ("ADDED", "added-meanwhile") in s and ("DELETED", "deleted-meanwhile") in s)
        assert informer.relists == 1  # 410 Gone sent it back to a list, once
        assert ("MODIFIED", "kept") in seen  # the list's version replaces the remembered one
        assert {o["metadata"]["name"] for o in informer.items()} >= {"kept", "added-meanwhile"}
        _podtemplate(kube, ns, "later")
        wait(lambda s: ("ADDED", "later") in s)  # and it watches on from the new list
    finally:
        informer.stop()


def _solo_controller(kube, testbed, namespace, lease_name, name):
    backend = KubernetesBackend(settings_for(testbed, namespace), kube=kube)
    return backend.controller(
        namespace=namespace, lease_name=lease_name, name=name,
        lease_duration=3.0, renew_deadline=2.0, retry_period=0.25,
    )  # fmt: skip


def test_of_two_controllers_one_leads_and_the_other_takes_over_when_it_dies(
    kube, testbed, crd_installed
):
    ns = new_namespace(kube, "solo")
    lease = f"lease-{uuid.uuid4().hex[:6]}"
    a = _solo_controller(kube, testbed, ns, lease, "a").start()
    b = _solo_controller(kube, testbed, ns, lease, "b").start()
    by_name = {"a": a, "b": b}
    try:
        holder = wait_for(
            kube, LEASE, "kube-system",
            lambda o: (o.get(lease, {}).get("spec") or {}).get("holderIdentity"), what="a holder",
        )  # fmt: skip
        leader, follower = by_name[holder], by_name["b" if holder == "a" else "a"]
        assert leader.elector.leading.wait(10)
        assert not follower.leading
        # Work goes to the leader only.
        pool(testbed, "lead", labels={"apps": "lead"})
        doc = with_labels(readme("inference-phi-3.yaml"), {"apps": "lead"})
        KubernetesBackend(settings_for(testbed, ns), kube=kube).apply([doc])
        name = doc["metadata"]["name"]
        wait_for(
            kube,
            WORKSPACE,
            ns,
            lambda o: condition(o.get(name), "WorkspaceReady") == "True",
            what="ready",
        )
        # Every Event came from the leader (they go from a thread of their own: once the
        # Created one is in, look at all of them).
        from kaito_jupyter.backends.kubernetes.kube import EVENT

        wait_for(
            kube, EVENT, ns,
            lambda o: any(e.get("reason") == "Created" for e in o.values()), what="the Created Event",
        )  # fmt: skip
        sources = {
            e["reportingInstance"]
            for e in kube.list(EVENT, ns)["items"]
            if e.get("reportingComponent") == "kaito-jupyter"
        }
        assert sources == {leader.identity}
        assert follower.reconciles == 0
        # The leader dies without a word (no release): its Lease runs out and the other leads.
        leader.stop(release=False)
        wait_for(
            kube, LEASE, "kube-system",
            lambda o: (o.get(lease, {}).get("spec") or {}).get("holderIdentity") == follower.identity,
            what="the takeover", timeout=30,
        )  # fmt: skip
        assert follower.elector.leading.wait(10)
        assert follower.leading and not leader.leading
    finally:
        a.stop()
        b.stop()


class Killed(BaseException):
    """The process died here (BaseException: no `except Exception` in the code swallows it)."""


def killing(kube: Kube, budget: int) -> Kube:
    """`kube`, but the process dies at its `budget`-th API call."""

    class Dying(Kube):
        calls = 0

        def request(self, *args, **kwargs):
            type(self).calls += 1
            if type(self).calls >= budget:
                raise Killed()
            return super().request(*args, **kwargs)

    dying = Dying.__new__(Dying)
    dying.__dict__.update(kube.__dict__)
    return dying


def _fresh_reconciler(kube, settings):
    return Reconciler(kube, select(settings, kube), recorder=Recorder(kube))


def test_killed_at_random_points_and_restarted_20_times_the_reconciler_converges_with_no_duplicates(
    kube, testbed, crd_installed
):
    ns = new_namespace(kube, "solo")
    settings = settings_for(testbed, ns)
    nodes = pool(testbed, "kill", labels={"apps": "kill"})
    doc = with_labels(readme("inference-phi-3.yaml"), {"apps": "kill"})
    name = doc["metadata"]["name"]
    KubernetesBackend(settings, kube=kube).apply([doc])
    rng = random.Random(20)
    kills = 0
    for _ in range(20):
        r = _fresh_reconciler(killing(kube, rng.randint(1, 12)), settings)
        try:
            for _ in range(10):
                r.reconcile(ns, name)
        except Killed:
            kills += 1
    assert kills == 20
    # A last process that lives: it converges once the pod runs (KWOK is the kubelet).
    survivor = _fresh_reconciler(kube, settings)
    survivor.reconcile(ns, name)
    wait_for(
        kube,
        POD,
        ns,
        lambda o: any(condition(p, "Ready") == "True" for p in o.values()),
        what="pod ready",
    )
    survivor.reconcile(ns, name)
    assert not survivor.reconcile(ns, name).status_written  # converged: nothing left to change
    ws = kube.get(WORKSPACE, name, ns)
    assert condition(ws, "WorkspaceReady") == "True"
    assert ws["metadata"]["finalizers"] == [FINALIZER]
    assert [d["metadata"]["name"] for d in kube.list(DEPLOYMENT, ns)["items"]] == [name]
    assert [s["metadata"]["name"] for s in kube.list(SERVICE, ns)["items"]] == [name]
    pods = [p for p in kube.list(POD, ns)["items"] if not p["metadata"].get("deletionTimestamp")]
    assert len(pods) == 1 and pods[0]["spec"]["nodeName"] in nodes
    types = [c["type"] for c in ws["status"]["conditions"]]
    assert len(types) == len(set(types))
    # Deleting, killed again and again, still completes.
    kube.delete(WORKSPACE, name, ns)
    for _ in range(5):
        with contextlib.suppress(Killed):
            _fresh_reconciler(killing(kube, rng.randint(1, 4)), settings).reconcile(ns, name)
    survivor.reconcile(ns, name)
    assert kube.find(WORKSPACE, name, ns) is None


def test_a_user_who_may_not_install_the_crd_gets_an_error_naming_the_rbac(kube, crd_installed):
    ns = new_namespace(kube)
    sa = Kind("", "v1", "serviceaccounts", "ServiceAccount")
    kube.create(
        sa, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody"}}, ns
    )
    token = kube.request(
        "POST", sa.path(ns, "nobody", "token"),
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}},
    )["status"]["token"]  # fmt: skip
    with open(kube.configuration.ssl_ca_cert, "rb") as f:
        ca = f.read()
    nobody = Kube(temp_kubeconfig(kube.host, ca, token))
    with pytest.raises(BackendError) as caught:
        install(nobody, force=True)
    text = str(caught.value)
    assert "customresourcedefinitions" in text and "create" in text and "kaito install" in text
    # And a workspace write it may not make names the roles to ask for.
    with pytest.raises(BackendError) as caught:
        nobody.list(WORKSPACE, ns)
    assert "forbidden" in str(caught.value) and "user-rbac.yaml" in str(caught.value)


def test_a_tuning_job_that_fails_turns_the_workspace_failed_with_the_jobs_account(
    kube, testbed, crd_installed
):
    from tests.testbed.kwok_stages import EXIT_CODE

    ns = new_namespace(kube, "solo")
    backend = KubernetesBackend(settings_for(testbed, ns), kube=kube)
    # The bed's kubelet (KWOK) exits the Job's pod with code 1.
    c = backend.controller(
        namespace=ns, lease_name=f"lease-{uuid.uuid4().hex[:6]}", render={"pod_annotations": {EXIT_CODE: "1"}},
        lease_duration=3.0, renew_deadline=2.0, retry_period=0.25,
    ).start()  # fmt: skip
    try:
        pool(testbed, "tunefail", labels={"app": "tunefail"})
        doc = with_labels(readme("tuning-phi-3.yaml"), {"app": "tunefail"})
        backend.apply([doc])
        name = doc["metadata"]["name"]
        ws = wait_for(
            kube,
            WORKSPACE,
            ns,
            lambda o: (o.get(name, {}).get("status") or {}).get("state") == "Failed" and o[name],
            what="Failed",
        )
        assert condition(ws, "WorkspaceSucceeded") == "False"
        assert condition(ws, "JobStarted") == "False"
    finally:
        c.stop()
