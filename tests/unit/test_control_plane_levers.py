"""The control plane's cheap paths (issue 15 section 1): what makes a reconcile skip an apply,
where it reads from, how Events are sent, and that many workers still never run one workspace
twice at once."""

from __future__ import annotations

import threading

import pytest

from kaito_jupyter.backends.kubernetes.events import Recorder
from kaito_jupyter.backends.kubernetes.kube import DEPLOYMENT, EVENT, POD, ApiError
from kaito_jupyter.backends.kubernetes.reads import Reads
from kaito_jupyter.backends.kubernetes.reconciler import Applied, _applied, _as_applied, _digest
from kaito_jupyter.cli import parser
from kaito_jupyter.controller.queue import WorkQueue

RENDERED = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "ws",
        "namespace": "ns",
        "labels": {"kaito.sh/workspace": "ws"},
        "annotations": {"workspace.kaito.io/hash": "abc"},
        "ownerReferences": [{"uid": "owner-1", "kind": "Workspace", "name": "ws"}],
    },
    "spec": {"replicas": 1},
}


def live(**meta):
    base = {
        "uid": "d-1",
        "generation": 3,
        "resourceVersion": "10",
        "labels": {"kaito.sh/workspace": "ws", "extra": "kept"},
        "annotations": {"workspace.kaito.io/hash": "abc", "deployment.kubernetes.io/revision": "1"},
        "ownerReferences": [{"uid": "owner-1"}],
    }
    base.update(meta)
    return {"metadata": base, "spec": {"replicas": 1}, "status": {"readyReplicas": 1}}


LAST = Applied(digest=_digest(RENDERED), uid="d-1", generation=3, resource_version="9")


def test_an_object_as_our_last_apply_left_it_is_not_applied_again():
    # The resourceVersion moved (the Deployment controller wrote status): still as applied.
    assert _as_applied(live(resourceVersion="42"), LAST, RENDERED)


@pytest.mark.parametrize(
    "edit",
    [
        {"generation": 4},  # someone edited the spec
        {"uid": "d-2"},  # deleted and made again
        {"labels": {"extra": "kept"}},  # our label removed (no generation bump)
        {"annotations": {"workspace.kaito.io/hash": "other"}},
        {"ownerReferences": []},
        {"deletionTimestamp": "2026-01-01T00:00:00Z"},
    ],
)
def test_a_drifted_object_is_applied_again(edit):
    assert not _as_applied(live(**edit), LAST, RENDERED)


def test_a_kind_without_a_generation_is_compared_by_resource_version():
    service = {**RENDERED, "kind": "Service"}
    last = _applied({"metadata": {"uid": "s-1", "resourceVersion": "7"}}, _digest(service))
    assert last.generation is None
    same = {"metadata": {"uid": "s-1", "resourceVersion": "7", **service["metadata"]}}
    same["metadata"]["uid"] = "s-1"
    assert _as_applied(same, last, service)
    same["metadata"]["resourceVersion"] = "8"  # edited by hand
    assert not _as_applied(same, last, service)


def test_the_digest_ignores_key_order_and_sees_any_change():
    reordered = dict(reversed(list(RENDERED.items())))
    assert _digest(reordered) == _digest(RENDERED)
    changed = {**RENDERED, "spec": {"replicas": 2}}
    assert _digest(changed) != _digest(RENDERED)


# -- reads ---------------------------------------------------------------------------------------


class FakeKube:
    def __init__(self, objects=None, fail_create_with=None):
        self.objects = objects or {}
        self.calls: list[tuple] = []
        self.fail_create_with = fail_create_with

    def find(self, kind, name, namespace=None):
        self.calls.append(("get", kind.kind, name))
        return self.objects.get((kind.kind, namespace, name))

    def list(self, kind, namespace=None, *, label_selector=None, field_selector=None):
        self.calls.append(("list", kind.kind, label_selector))
        return {"items": [o for (k, ns, _), o in self.objects.items() if k == kind.kind]}

    def create(self, kind, obj, namespace=None):
        self.calls.append(("create", kind.kind, obj["metadata"]["name"]))
        if self.fail_create_with:
            raise ApiError(self.fail_create_with, "AlreadyExists", "exists")
        self.objects[(kind.kind, namespace, obj["metadata"]["name"])] = obj
        return obj

    def patch(self, kind, name, namespace, body, **_):
        self.calls.append(("patch", kind.kind, name, body))
        return body


class FakeInformer:
    def __init__(self, objects, synced=True):
        self.cache = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects}
        self.synced = threading.Event()
        if synced:
            self.synced.set()

    def get(self, namespace, name):
        return self.cache.get((namespace, name))

    def items(self):
        return list(self.cache.values())


def _obj(name, namespace="ns", **labels):
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels}}


def test_reads_come_from_a_synced_cache_and_a_miss_is_confirmed_only_when_asked():
    kube = FakeKube({("Deployment", "ns", "mine"): _obj("mine")})
    reads = Reads(kube, {"Deployment": FakeInformer([_obj("cached")])})
    assert reads.find(DEPLOYMENT, "cached", "ns")["metadata"]["name"] == "cached"
    assert reads.find(DEPLOYMENT, "mine", "ns") is None  # a miss, trusted
    assert kube.calls == []
    assert reads.find(DEPLOYMENT, "mine", "ns", confirm_missing=True) is not None
    assert kube.calls == [("get", "Deployment", "mine")]


def test_an_unsynced_cache_is_not_read():
    kube = FakeKube()
    reads = Reads(kube, {"Deployment": FakeInformer([_obj("x")], synced=False)})
    assert reads.find(DEPLOYMENT, "x", "ns") is None
    assert kube.calls == [("get", "Deployment", "x")]


def test_pods_of_a_workspace_from_the_cache_are_its_own_in_its_namespace():
    pods = [
        _obj("a-1", **{"kaito.sh/workspace": "a"}),
        _obj("b-1", **{"kaito.sh/workspace": "b"}),
        _obj("a-2", "other", **{"kaito.sh/workspace": "a"}),
    ]
    reads = Reads(FakeKube(), {"Pod": FakeInformer(pods)})
    assert [p["metadata"]["name"] for p in reads.pods("ns", "a")] == ["a-1"]
    bare = FakeKube()
    Reads(bare).pods("ns", "a")
    assert bare.calls == [("list", POD.kind, "kaito.sh/workspace=a")]


# -- events --------------------------------------------------------------------------------------

WS = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "ws", "namespace": "ns", "uid": "u"}}  # fmt: skip


def test_a_new_event_is_one_create_and_a_repeat_raises_the_count():
    kube = FakeKube()
    Recorder(kube).record(WS, "Normal", "Created", "created Deployment ws")
    assert [c[0] for c in kube.calls] == ["create"]
    name = kube.calls[0][2]
    again = FakeKube({("Event", "ns", name): {"count": 2}}, fail_create_with=409)
    Recorder(again).record(WS, "Normal", "Created", "created Deployment ws")
    assert [c[0] for c in again.calls] == ["create", "get", "patch"]
    assert again.calls[-1][3]["count"] == 3


def test_background_events_are_all_sent_in_order_by_flush():
    kube = FakeKube()
    recorder = Recorder(kube, background=True)
    for i in range(20):
        recorder.record(WS, "Normal", f"R{i}", "m")
    recorder.flush()
    reasons = [kube.objects[(EVENT.kind, "ns", c[2])]["reason"] for c in kube.calls]
    assert reasons == [f"R{i}" for i in range(20)]


def test_an_event_the_server_refuses_does_not_raise():
    Recorder(FakeKube(fail_create_with=403)).record(WS, "Warning", "X", "m")


# -- workers -------------------------------------------------------------------------------------


def test_many_workers_never_hold_one_key_at_once_and_lose_no_add():
    queue = WorkQueue()
    holding: dict[str, int] = {}
    lock = threading.Lock()
    overlaps: list[str] = []
    processed: dict[str, int] = {}
    rounds = threading.Barrier(9)

    def worker():
        rounds.wait()
        while (key := queue.get(timeout=0.5)) is not None:
            with lock:
                holding[key] = holding.get(key, 0) + 1
                if holding[key] > 1:
                    overlaps.append(key)
                processed[key] = processed.get(key, 0) + 1
            for k in ("a", "b", "c"):  # changes arriving while a key is worked on
                if processed[key] < 50:
                    queue.add(k)
            with lock:
                holding[key] -= 1
            queue.done(key)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for k in ("a", "b", "c"):
        queue.add(k)
    rounds.wait()
    for t in threads:
        t.join(timeout=30)
    assert overlaps == []
    assert set(processed) == {"a", "b", "c"}


def test_the_controller_workers_option_is_checked(capsys):
    args = parser().parse_args(["controller", "--backend", "kubernetes", "--workers", "16"])
    assert args.workers == 16
    with pytest.raises(SystemExit):
        parser().parse_args(["controller", "--workers", "0"])
    assert "--workers must be a whole number >= 1, not '0'" in capsys.readouterr().err


def test_keys_added_first_are_served_before_the_others_and_still_only_once():
    queue = WorkQueue()
    queue.add("old-1")
    queue.add("old-2")
    queue.add("new", first=True)
    queue.add("new", first=True)
    got = [queue.get(timeout=0), queue.get(timeout=0), queue.get(timeout=0)]
    assert got == ["new", "old-1", "old-2"]
    assert queue.get(timeout=0) is None


# -- which workspaces a node concerns ------------------------------------------------------------


def _ws(name="ws", selector=None, worker_nodes=None, preferred=None):
    resource = {"instanceType": "Standard_NC6s_v3"}
    if selector is not None:
        resource["labelSelector"] = selector
    if preferred:
        resource["preferredNodes"] = preferred
    status = {"workerNodes": worker_nodes} if worker_nodes else {}
    return {"metadata": {"name": name, "namespace": "ns"}, "resource": resource, "status": status}


def test_a_node_concerns_the_workspaces_its_labels_select_and_no_others():
    from kaito_jupyter.controller.node_interest import concerns

    mine = _ws(selector={"matchLabels": {"apps": "a"}})
    other = _ws(selector={"matchLabels": {"apps": "b"}})
    assert concerns("n1", {"apps": "a"}, mine)
    assert not concerns("n1", {"apps": "a"}, other)
    exprs = _ws(selector={"matchExpressions": [{"key": "apps", "operator": "In", "values": ["a", "c"]}]})  # fmt: skip
    assert concerns("n1", {"apps": "c"}, exprs) and not concerns("n1", {"apps": "b"}, exprs)
    notin = _ws(selector={"matchExpressions": [{"key": "apps", "operator": "NotIn", "values": ["a"]}]})  # fmt: skip
    assert not concerns("n1", {"apps": "a"}, notin) and concerns("n1", {}, notin)


def test_a_node_made_for_a_workspace_or_running_it_or_preferred_concerns_it_whatever_its_labels():
    from kaito_jupyter.controller.node_interest import concerns

    ws = _ws(selector={"matchLabels": {"apps": "x"}})
    made = {"kaito.sh/workspace": "ws", "kaito.sh/workspacenamespace": "ns"}
    assert concerns("pool-node", made, ws)
    assert not concerns("pool-node", {**made, "kaito.sh/workspacenamespace": "elsewhere"}, ws)
    assert concerns("n7", {}, _ws(selector={"matchLabels": {"apps": "x"}}, worker_nodes=["n7"]))
    assert concerns("n8", {}, _ws(selector={"matchLabels": {"apps": "x"}}, preferred=["n8"]))


def test_when_in_doubt_a_node_concerns_the_workspace():
    from kaito_jupyter.controller.node_interest import concerns

    assert concerns("n1", {"apps": "a"}, _ws())  # no selector: any node of its type may do
    odd = _ws(selector={"matchExpressions": [{"key": "apps", "operator": "Gt", "values": ["1"]}]})
    assert concerns("n1", {}, odd)


def test_a_key_waits_on_one_timer_the_earliest_asked_for():
    now = [0.0]
    queue = WorkQueue(clock=lambda: now[0])
    for seconds in (5, 5, 3, 9):
        queue.add_after("k", seconds)
    now[0] = 3.0
    assert queue.get(timeout=0) == "k"
    queue.done("k")
    now[0] = 20.0
    assert queue.get(timeout=0) is None  # the later asks were folded into the first
    queue.add_after("k", 1)  # once served, a new ask starts a new timer
    now[0] = 21.0
    assert queue.get(timeout=0) == "k"
