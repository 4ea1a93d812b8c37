"""The workspace controller on the real test bed: CRD, apply-time refusals, inference and
tuning workloads scheduled onto KWOK GPU nodes, status, deletion."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from kaito_jupyter.backends.kubernetes import crd
from kaito_jupyter.backends.kubernetes.kube import (
    CRD,
    DEPLOYMENT,
    JOB,
    POD,
    SERVICE,
    STATEFULSET,
    WORKSPACE,
)
from kaito_jupyter.controller.plan import FINALIZER
from kaito_jupyter.errors import ValidationError
from tests.testbed.bed import NodeGroup

from .conftest import condition, wait_for

WORKSPACES = Path(__file__).resolve().parents[2] / "notebooks" / "workspaces"


def readme(name: str) -> dict:
    doc = yaml.safe_load((WORKSPACES / name).read_text())
    return doc


def with_labels(doc: dict, labels: dict[str, str]) -> dict:
    out = copy.deepcopy(doc)
    out["resource"]["labelSelector"] = {"matchLabels": labels}
    return out


def pool(
    testbed, name: str, sku: str = "Standard_NC6s_v3", count: int = 1, labels=None
) -> list[str]:
    return testbed.add_gpu_nodes(NodeGroup(sku, count, pool=name, labels=labels or {"apps": name}))


def ready(name: str):
    return lambda objs: condition(objs.get(name), "WorkspaceReady") == "True" and objs[name]


def ready_phi3(kube, backend, testbed, namespace, label: str) -> tuple[dict, list[str]]:
    """The README's phi-3 workspace on a pool of its own (selected by apps=label), applied and
    waited for until ready: (the document applied, the pool's nodes)."""
    nodes = pool(testbed, label, labels={"apps": label})
    doc = with_labels(readme("inference-phi-3.yaml"), {"apps": label})
    backend.apply([doc])
    wait_for(kube, WORKSPACE, namespace, ready(doc["metadata"]["name"]), what="ready")
    return doc, nodes


def test_crd_is_installed_with_both_versions_and_kubectl_get_shows_the_readme_columns(
    kube, crd_installed, backend, controller, testbed, namespace
):
    found = kube.get(CRD, crd.NAME)
    assert [v["name"] for v in found["spec"]["versions"] if v["storage"]] == ["v1beta1"]
    assert found["spec"]["names"]["shortNames"] == ["wk", "wks"]
    pool(testbed, "readme", labels={"apps": "phi-3"})
    backend.apply([readme("inference-phi-3.yaml")])
    wait_for(
        kube, WORKSPACE, namespace, ready("workspace-phi-3-mini"), what="workspace-phi-3-mini ready"
    )
    # What `kubectl get workspace` prints: the API server's Table for the CRD's printer columns.
    table = kube.request(
        "GET",
        WORKSPACE.path(namespace),
        query=[],
        content_type="application/json",
        accept="application/json;as=Table;v=v1;g=meta.k8s.io",
    )
    columns = [c["name"].upper() for c in table["columnDefinitions"] if c["priority"] == 0]
    assert columns == [
        "NAME",
        "INSTANCE",
        "RESOURCEREADY",
        "INFERENCEREADY",
        "JOBSTARTED",
        "WORKSPACESUCCEEDED",
        "WORKSPACEREADY",
        "STATE",
        "AGE",
    ]
    [row] = table["rows"]
    cells = dict(
        zip([c["name"].upper() for c in table["columnDefinitions"]], row["cells"], strict=True)
    )
    assert cells["NAME"] == "workspace-phi-3-mini"
    assert cells["INSTANCE"] == "Standard_NC6s_v3"
    assert (cells["RESOURCEREADY"], cells["INFERENCEREADY"], cells["WORKSPACEREADY"]) == (
        "True",
        "True",
        "True",
    )
    assert cells["STATE"] == "Ready"


def wait_event(kube, namespace, reason, type_="Warning"):
    """The Event the controller records (a moment after the status it goes with)."""
    from kaito_jupyter.backends.kubernetes.kube import EVENT

    return wait_for(
        kube, EVENT, namespace,
        lambda objs: next((e for e in objs.values() if e.get("reason") == reason and e.get("type") == type_ and e["involvedObject"]["kind"] == "Workspace"), None),
        what=f"a {type_} Event {reason}",
    )  # fmt: skip


def _pods(kube, namespace, name):
    return kube.list(POD, namespace, label_selector=f"kaito.sh/workspace={name}")["items"]


def test_readme_adapter_workspace_runs_with_a_puller_init_container_on_its_labelled_gpu_node(
    kube, backend, controller, testbed, namespace
):
    doc = readme("inference-phi-3-adapters.yaml")
    doc["inference"]["adapters"][0]["source"]["image"] = "myacr.azurecr.io/phi-3-adapter:0.0.1"
    nodes = pool(testbed, "adapter", labels={"apps": "phi-3-adapter"})
    backend.apply([doc])
    ws = wait_for(
        kube,
        WORKSPACE,
        namespace,
        ready("workspace-phi-3-mini-adapter"),
        what="adapter workspace ready",
    )
    assert ws["status"]["workerNodes"] == nodes
    assert FINALIZER in ws["metadata"]["finalizers"]
    dep = kube.get(DEPLOYMENT, "workspace-phi-3-mini-adapter", namespace)
    assert [
        m["manager"] for m in dep["metadata"]["managedFields"] if m["operation"] == "Apply"
    ] == ["kaito-jupyter"]
    [pod] = _pods(kube, namespace, "workspace-phi-3-mini-adapter")
    assert pod["spec"]["nodeName"] in nodes  # really scheduled, by kube-scheduler
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["puller-phi-3-adapter"]
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    svc = kube.get(SERVICE, "workspace-phi-3-mini-adapter", namespace)
    assert [p["port"] for p in svc["spec"]["ports"]] == [80, 29500]


def test_readme_tuning_workspace_runs_its_job_to_workspace_succeeded(
    kube, backend, controller, testbed, namespace
):
    pool(testbed, "tuning", labels={"app": "tuning-phi-3"})
    backend.apply([readme("tuning-phi-3.yaml")])
    name = "workspace-tuning-phi-3"
    ws = wait_for(
        kube,
        WORKSPACE,
        namespace,
        lambda o: condition(o.get(name), "WorkspaceSucceeded") == "True" and o[name],
        what="tuning succeeded",
    )
    assert condition(ws, "JobStarted") == "True"
    assert condition(ws, "InferenceReady") is None
    assert ws["status"]["state"] == "Succeeded"
    job = kube.get(JOB, name, namespace)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "python",
        "-m",
        "kaito_jupyter.runtimes.tuning",
    ]


def test_multi_node_inference_is_a_statefulset_with_a_headless_service_one_pod_per_node(
    kube, backend, controller, testbed, namespace
):
    nodes = pool(testbed, "multi", count=2, labels={"apps": "multi"})
    doc = with_labels(readme("inference-phi-3.yaml"), {"apps": "multi"})
    doc["metadata"]["name"] = "multi"
    doc["resource"]["count"] = 2
    backend.apply([doc])
    ws = wait_for(kube, WORKSPACE, namespace, ready("multi"), what="multi-node ready")
    assert sorted(ws["status"]["workerNodes"]) == sorted(nodes)
    assert ws["status"]["targetNodeCount"] == 2
    sts = kube.get(STATEFULSET, "multi", namespace)
    assert (
        sts["spec"]["replicas"],
        sts["spec"]["podManagementPolicy"],
        sts["spec"]["serviceName"],
    ) == (2, "Parallel", "multi-headless")
    assert kube.get(SERVICE, "multi-headless", namespace)["spec"]["clusterIP"] == "None"
    assert sorted(p["spec"]["nodeName"] for p in _pods(kube, namespace, "multi")) == sorted(nodes)
    assert kube.find(DEPLOYMENT, "multi", namespace) is None


def test_the_api_server_refuses_a_toggle_from_inference_to_tuning_and_other_cel_rules(
    kube, backend, namespace
):
    inference = with_labels(readme("inference-phi-3.yaml"), {"apps": "cel"})
    backend.apply([inference])
    tuning = with_labels(readme("tuning-phi-3.yaml"), {"apps": "cel"})
    tuning["metadata"]["name"] = inference["metadata"]["name"]
    with pytest.raises(ValidationError, match="cannot switch between inference and tuning"):
        backend.apply([tuning])
    moved = copy.deepcopy(inference)
    moved["resource"]["instanceType"] = "Standard_NC12s_v3"
    with pytest.raises(ValidationError, match="instanceType is immutable"):
        backend.apply([moved])
    other = copy.deepcopy(inference)
    other["inference"]["preset"]["name"] = "phi-3-mini-128k-instruct"
    with pytest.raises(ValidationError, match="preset name is immutable"):
        backend.apply([other])
    both = copy.deepcopy(tuning)
    both["metadata"]["name"] = "both"
    both["inference"] = inference["inference"]
    with pytest.raises(ValidationError, match="exactly one of inference or tuning"):
        backend.apply([both])
    method = copy.deepcopy(tuning)
    method["metadata"]["name"] = "method"
    method["tuning"]["method"] = "full"
    with pytest.raises(ValidationError, match="Unsupported value"):
        backend.apply([method])
    bad_name = copy.deepcopy(inference)
    bad_name["metadata"]["name"] = "9lives"
    with pytest.raises(ValidationError, match="DNS-1035"):
        backend.apply([bad_name])
    # All or none: a refused document keeps the good one beside it from being written.
    good = copy.deepcopy(inference)
    good["metadata"]["name"] = "good"
    with pytest.raises(ValidationError):
        backend.apply([good, bad_name])
    assert kube.find(WORKSPACE, "good", namespace) is None


def test_an_unschedulable_pod_is_classified_with_the_schedulers_own_message(
    kube, backend, controller, testbed, namespace
):
    [node] = pool(testbed, "full", labels={"apps": "full"})
    # Something else holds the node's only GPU.
    kube.create(POD, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "squatter"},
        "spec": {
            "nodeName": node,
            "tolerations": [{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
            "containers": [{"name": "c", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        },
    }, namespace)  # fmt: skip
    doc = with_labels(readme("inference-phi-3.yaml"), {"apps": "full"})
    backend.apply([doc])
    name = doc["metadata"]["name"]

    def unschedulable(objs):
        conds = {
            c["type"]: c for c in (objs.get(name, {}).get("status") or {}).get("conditions") or []
        }
        inf = conds.get("InferenceReady") or {}
        return inf.get("reason") == "Unschedulable" and inf

    inf = wait_for(kube, WORKSPACE, namespace, unschedulable, what="Unschedulable")
    assert inf["status"] == "False"
    assert "Insufficient nvidia.com/gpu" in inf["message"]
    event = wait_event(kube, namespace, "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in event["message"]
    assert any(e.reason == "Unschedulable" for e in backend.events(name))


@pytest.mark.parametrize(
    ("waiting", "last", "reason"),
    [
        (
            {"reason": "ImagePullBackOff", "message": "Back-off pulling image"},
            None,
            "ImagePullError",
        ),
        (
            {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting"},
            {"exitCode": 1, "reason": "Error"},
            "ContainerCrashLoopBackOff",
        ),
        (
            {"reason": "CrashLoopBackOff", "message": "back-off"},
            {"exitCode": 137, "reason": "OOMKilled"},
            "ContainerOOMKilled",
        ),
    ],
    ids=["image-pull", "crash-loop", "oom"],
)
def test_a_failing_container_is_classified_and_inference_ready_is_never_true_over_it(
    kube, backend, controller, testbed, namespace, waiting, last, reason
):
    label = f"fail-{reason.lower()[:12]}"
    pool(testbed, label, labels={"apps": label})
    doc = with_labels(readme("inference-phi-3.yaml"), {"apps": label})
    backend.apply([doc])
    name = doc["metadata"]["name"]
    wait_for(kube, WORKSPACE, namespace, ready(name), what="ready before the failure")
    [pod] = _pods(kube, namespace, name)
    # What the kubelet reports (KWOK is the kubelet here): the container fails; Ready lags.
    status = copy.deepcopy(pod["status"])
    cs = status["containerStatuses"][0]
    cs["state"] = {"waiting": waiting}
    cs["restartCount"] = 3
    if last:
        cs["lastState"] = {
            "terminated": {
                **last,
                "startedAt": cs.get("lastState", {}).get("startedAt")
                or pod["metadata"]["creationTimestamp"],
                "finishedAt": pod["metadata"]["creationTimestamp"],
            }
        }
    kube.patch(
        POD,
        pod["metadata"]["name"],
        namespace,
        {"status": {"containerStatuses": [cs]}},
        sub="status",
    )

    def classified(objs):
        conds = {
            c["type"]: c for c in (objs.get(name, {}).get("status") or {}).get("conditions") or []
        }
        return (conds.get("InferenceReady") or {}).get("reason") == reason and objs[name]

    ws = wait_for(kube, WORKSPACE, namespace, classified, what=reason)
    assert condition(ws, "InferenceReady") == "False"
    assert condition(ws, "WorkspaceReady") == "False"
    assert ws["status"]["state"] == "NotReady"
    wait_event(kube, namespace, reason)


def test_a_spec_change_rolls_the_workload_to_the_new_revision(
    kube, backend, controller, testbed, namespace
):
    doc, _ = ready_phi3(kube, backend, testbed, namespace, "roll")
    name = doc["metadata"]["name"]
    before = kube.get(DEPLOYMENT, name, namespace)["spec"]["template"]["metadata"]["annotations"][
        "workspace.kaito.io/hash"
    ]
    doc["inference"]["adapters"] = [
        {"source": {"name": "a", "image": "myacr.azurecr.io/a:1"}, "strength": "0.5"}
    ]
    [applied] = backend.apply([doc])
    assert applied.action == "configured"

    def rolled(objs):
        pods = [p for p in objs.values() if not p["metadata"].get("deletionTimestamp")]
        hashes = {p["metadata"]["annotations"]["workspace.kaito.io/hash"] for p in pods}
        return len(pods) == 1 and hashes != {before} and condition(pods[0], "Ready") == "True"

    wait_for(
        kube,
        POD,
        namespace,
        rolled,
        what="the new revision's pod",
        label_selector=f"kaito.sh/workspace={name}",
    )
    wait_for(kube, WORKSPACE, namespace, ready(name), what="ready again")
    assert [backend.apply([doc])[0].action] == ["unchanged"]


def test_a_preset_this_version_does_not_know_is_reported_in_status_and_others_still_reconcile(
    kube, backend, controller, testbed, namespace
):
    pool(testbed, "unknown", labels={"apps": "unknown"})
    bad = with_labels(readme("inference-phi-3.yaml"), {"apps": "unknown"})
    bad["metadata"]["name"] = "from-the-future"
    bad["inference"]["preset"]["name"] = "phi-9-omega"
    good = with_labels(readme("inference-phi-3.yaml"), {"apps": "unknown"})
    backend.apply([bad, good])
    objs = wait_for(
        kube, WORKSPACE, namespace,
        lambda o: condition(o.get("from-the-future"), "InferenceReady") == "False" and condition(o.get(good["metadata"]["name"]), "WorkspaceReady") == "True" and o,
        what="one reported, the other ready",
    )  # fmt: skip
    conds = {c["type"]: c for c in objs["from-the-future"]["status"]["conditions"]}
    assert conds["InferenceReady"]["reason"] == "UnsupportedPreset"
    assert "phi-9-omega" in conds["InferenceReady"]["message"]


def test_no_matching_nodes_says_so_in_resource_ready(kube, backend, controller, namespace):
    doc = with_labels(readme("inference-phi-3.yaml"), {"apps": "nowhere"})
    backend.apply([doc])
    name = doc["metadata"]["name"]
    ws = wait_for(
        kube,
        WORKSPACE,
        namespace,
        lambda o: condition(o.get(name), "ResourceReady") == "False" and o[name],
        what="ResourceReady False",
    )
    conds = {c["type"]: c for c in ws["status"]["conditions"]}
    assert conds["ResourceReady"]["reason"] == "NoMatchingNodes"
    assert "apps=nowhere" in conds["ResourceReady"]["message"]
    assert kube.find(DEPLOYMENT, name, namespace) is None


def test_backend_reads_nodes_events_endpoint_and_controller_presence(
    kube, backend, controller, testbed, namespace
):
    doc, nodes = ready_phi3(kube, backend, testbed, namespace, "reads")
    name = doc["metadata"]["name"]
    [node] = [n for n in backend.nodes() if n.name in nodes]
    assert (node.instance_type, node.gpus, node.gpus_used) == ("Standard_NC6s_v3", 1, 1)
    assert node.workspaces == (f"{namespace}/{name}",)
    wait_event(kube, namespace, "Created", "Normal")
    assert any(e.reason == "Created" for e in backend.events(name))
    endpoint = backend.endpoint(name)
    assert endpoint.url.endswith(f"/api/v1/namespaces/{namespace}/services/{name}:http/proxy")
    assert endpoint.headers["Authorization"].startswith("Bearer ")
    assert backend.ensure_controller() is None  # the session controller holds the Lease
    assert [w.name for w in backend.list()] == [name]


def test_an_inference_template_workload_runs_the_users_pod_on_the_workspaces_node(
    kube, backend, controller, testbed, namespace
):
    nodes = pool(testbed, "template", labels={"apps": "template"})
    doc = {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "custom"},
        "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"apps": "template"}}},
        "inference": {"template": {"spec": {"containers": [{
            "name": "server", "image": "nginx:1.27",
            "resources": {"limits": {"nvidia.com/gpu": "1"}},
        }]}}},
    }  # fmt: skip
    backend.apply([doc])
    wait_for(kube, WORKSPACE, namespace, ready("custom"), what="template workspace ready")
    [pod] = _pods(kube, namespace, "custom")
    assert pod["spec"]["nodeName"] in nodes
    assert [c["name"] for c in pod["spec"]["containers"]] == ["server"]
    assert pod["metadata"]["annotations"]["kaito.sh/runtime"] == "template"


def test_the_command_layer_drives_the_kubernetes_backend_from_admission_to_describe(
    kube, controller, testbed, namespace, tmp_path, monkeypatch
):
    from kaito_jupyter import commands

    for var, value in {
        "KAITO_BACKEND": "kubernetes", "KUBECONFIG": str(testbed.kubeconfig),
        "KAITO_NAMESPACE": namespace, "JUPYTER_CONFIG_DIR": str(tmp_path),
    }.items():  # fmt: skip
        monkeypatch.setenv(var, value)
    pool(testbed, "commands", labels={"apps": "commands"})
    text = yaml.safe_dump(with_labels(readme("inference-phi-3.yaml"), {"apps": "commands"}))
    [applied] = commands.apply(text, source="phi-3.yaml")
    assert applied.action == "created"
    ready_ws = commands.wait("workspace-phi-3-mini", timeout=60)
    assert commands.phase(ready_ws) == "ready"
    described = commands.describe("workspace-phi-3-mini")
    assert described.runtime == "vllm"
    assert described.endpoint is not None and described.endpoint.url.endswith(":http/proxy")
    assert [n.name for n in described.nodes] == ready_ws.data["status"]["workerNodes"]
    # Admission stays strict on our side: a preset that does not fit the instance type.
    too_big = with_labels(readme("inference-phi-3.yaml"), {"apps": "commands"})
    too_big["metadata"]["name"] = "too-big"
    too_big["inference"]["preset"]["name"] = "llama-3.3-70b-instruct"
    with pytest.raises(ValidationError, match="GPU memory"):
        commands.apply(yaml.safe_dump(too_big))
    commands.delete("workspace-phi-3-mini", wait=True, timeout=60)
    assert kube.find(WORKSPACE, "workspace-phi-3-mini", namespace) is None


def test_an_object_of_the_same_name_that_is_not_the_workspaces_is_left_alone_and_reported(
    kube, backend, controller, testbed, namespace
):
    pool(testbed, "taken", labels={"apps": "taken"})
    doc = with_labels(readme("inference-phi-3.yaml"), {"apps": "taken"})
    name = doc["metadata"]["name"]
    theirs = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"ports": [{"port": 8080}]},
    }
    kube.create(SERVICE, theirs, namespace)
    backend.apply([doc])
    ws = wait_for(
        kube, WORKSPACE, namespace,
        lambda o: any(c.get("reason") == "ObjectConflict" for c in (o.get(name, {}).get("status") or {}).get("conditions") or []) and o[name],
        what="ObjectConflict",
    )  # fmt: skip
    message = next(
        c["message"] for c in ws["status"]["conditions"] if c["type"] == "InferenceReady"
    )
    assert f"Service {namespace}/{name} exists and does not belong to workspace {name}" in message
    assert [p["port"] for p in kube.get(SERVICE, name, namespace)["spec"]["ports"]] == [
        8080
    ]  # untouched
    assert kube.find(DEPLOYMENT, name, namespace) is None


def test_losing_a_node_turns_a_ready_workspace_not_ready(
    kube, backend, controller, testbed, namespace
):
    doc, [node] = ready_phi3(kube, backend, testbed, namespace, "lost")
    name = doc["metadata"]["name"]
    testbed.delete_nodes([node])
    ws = wait_for(
        kube, WORKSPACE, namespace,
        lambda o: condition(o.get(name), "ResourceReady") == "False" and o[name], what="ResourceReady False",
    )  # fmt: skip
    assert ws["status"]["state"] == "NotReady"  # it was Ready: NotReady, not Pending
    assert condition(ws, "WorkspaceReady") == "False"


def test_a_v1beta1_workspace_is_stored_and_read_in_both_versions(kube, backend, namespace):
    doc = with_labels(readme("inference-phi-3.yaml"), {"apps": "versions"})
    doc["apiVersion"] = "kaito.sh/v1beta1"
    [applied] = backend.apply([doc])
    assert applied.action == "created"
    name = doc["metadata"]["name"]
    alpha = kube.request("GET", f"/apis/kaito.sh/v1alpha1/namespaces/{namespace}/workspaces/{name}")
    assert alpha["apiVersion"] == "kaito.sh/v1alpha1"
    assert alpha["inference"] == doc["inference"]
    assert [a.action for a in backend.apply([doc])] == ["unchanged"]


def test_install_upgrades_our_crd_when_its_schema_revision_is_older_and_leaves_it_when_current(
    kube, crd_installed
):
    from kaito_jupyter.backends.kubernetes import install

    assert "current" in install.install(kube)
    kube.patch(
        CRD, crd.NAME, None, {"metadata": {"annotations": {crd.SCHEMA_REVISION_ANNOTATION: "0"}}}
    )
    assert install.install(kube).startswith("upgraded")
    assert (
        kube.get(CRD, crd.NAME)["metadata"]["annotations"][crd.SCHEMA_REVISION_ANNOTATION]
        == crd.SCHEMA_REVISION
    )


def test_a_deployment_or_service_edited_or_deleted_by_hand_is_restored(
    kube, backend, controller, testbed, namespace
):
    # The controller skips applies whose rendered object is unchanged since its last one;
    # that must never leave a hand edit or a deletion standing.
    from kaito_jupyter.backends.kubernetes.kube import JSON_PATCH
    from kaito_jupyter.controller.plan import HASH_ANNOTATION

    doc, _ = ready_phi3(kube, backend, testbed, namespace, "drift")
    name = doc["metadata"]["name"]
    original = kube.get(DEPLOYMENT, name, namespace)
    image = original["spec"]["template"]["spec"]["containers"][0]["image"]
    spec_hash = original["metadata"]["annotations"][HASH_ANNOTATION]

    def deployment(pred, what):
        return wait_for(kube, DEPLOYMENT, namespace, lambda o: o.get(name) and pred(o[name]), what=what)  # fmt: skip

    # A spec edit (the generation moves) is put back.
    kube.patch(
        DEPLOYMENT, name, namespace,
        [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "busybox:edited"},
         {"op": "replace", "path": "/spec/replicas", "value": 3}],
        content_type=JSON_PATCH,
    )  # fmt: skip
    deployment(
        lambda d: (
            d["spec"]["template"]["spec"]["containers"][0]["image"] == image
            and d["spec"]["replicas"] == 1
        ),
        "the edited Deployment restored",
    )
    # A metadata edit (no generation bump) is put back too.
    kube.patch(
        DEPLOYMENT, name, namespace, {"metadata": {"annotations": {HASH_ANNOTATION: "edited"}}}
    )
    deployment(
        lambda d: d["metadata"]["annotations"][HASH_ANNOTATION] == spec_hash,
        "the Deployment's annotation restored",
    )
    # Deleted, it is made again (a new object).
    kube.delete(DEPLOYMENT, name, namespace)
    deployment(
        lambda d: (
            d["metadata"]["uid"] != original["metadata"]["uid"]
            and not d["metadata"].get("deletionTimestamp")
        ),
        "the deleted Deployment made again",
    )
    # So is its Service, edited or deleted.
    service = kube.get(SERVICE, name, namespace)
    kube.patch(
        SERVICE, name, namespace,
        [{"op": "replace", "path": "/spec/ports/0/targetPort", "value": 1234}],
        content_type=JSON_PATCH,
    )  # fmt: skip
    wait_for(
        kube, SERVICE, namespace,
        lambda o: o.get(name) and o[name]["spec"]["ports"] == service["spec"]["ports"],
        what="the edited Service restored",
    )  # fmt: skip
    kube.delete(SERVICE, name, namespace)
    wait_for(
        kube, SERVICE, namespace,
        lambda o: o.get(name) and o[name]["metadata"]["uid"] != service["metadata"]["uid"],
        what="the deleted Service made again",
    )  # fmt: skip
    wait_for(kube, WORKSPACE, namespace, ready(name), what="ready again")
