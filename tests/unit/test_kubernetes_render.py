"""Rendering a Plan into Kubernetes objects (pure), the CRD's shape, and pod classification."""

from __future__ import annotations

import yaml

from kaito_jupyter import api
from kaito_jupyter.backends.kubernetes import crd, install, render, workload
from kaito_jupyter.controller import status as s
from kaito_jupyter.controller.plan import FINALIZER, HASH_ANNOTATION, RUNTIME_ANNOTATION, plan

from .samples import INFERENCE, TUNING, adapters, with_

OWNER = render.Owner("workspace-phi-3-mini", "default", "uid-1")
NODES = ["aks-gpu-1", "aks-gpu-0"]


def _plan(data: dict):
    return plan(api.check_dict(data, target="cluster").workspace)


def _pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def test_single_node_inference_is_a_deployment_and_a_service_with_kaitos_ports():
    svc, dep = render.render(_plan(INFERENCE), OWNER, NODES[:1])
    assert (svc["kind"], dep["kind"]) == ("Service", "Deployment")
    assert svc["metadata"]["name"] == dep["metadata"]["name"] == "workspace-phi-3-mini"
    assert svc["spec"]["type"] == "ClusterIP"
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
        (80, 5000),
        (29500, 29500),
    ]
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    for obj in (svc, dep):
        [ref] = obj["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("Workspace", "uid-1", True)


def test_pods_get_the_skus_gpus_kaitos_tolerations_affinity_to_the_nodes_and_health_probes():
    dep = render.workload(_plan(INFERENCE), OWNER, NODES)
    spec = _pod_spec(dep)
    [container] = spec["containers"]
    assert container["resources"] == {
        "requests": {"nvidia.com/gpu": "1"},
        "limits": {"nvidia.com/gpu": "1"},
    }
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    [term] = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert term["matchExpressions"] == [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": sorted(NODES)}
    ]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": 5000}


def test_v100_serves_fp16_and_a100_bf16_in_kaitos_vllm_image():
    v100 = render.workload(_plan(INFERENCE), OWNER, NODES[:1])
    [c] = _pod_spec(v100)["containers"]
    assert c["image"].startswith("mcr.microsoft.com/aks/kaito/kaito-phi-3-mini-4k-instruct")
    assert c["command"] == ["python3", "/workspace/vllm/inference_api.py"]
    assert "--dtype=float16" in c["args"]
    a100 = render.workload(
        _plan(with_(INFERENCE, resource__instanceType="Standard_NC24ads_A100_v4")), OWNER, NODES[:1]
    )
    assert "--dtype=bfloat16" in _pod_spec(a100)["containers"][0]["args"]


def test_our_runtime_gets_the_plans_command_and_args_and_configured_image():
    data = with_(INFERENCE, metadata__annotations={RUNTIME_ANNOTATION: "kaito-jupyter"})
    p = _plan(data)
    options = render.RenderOptions(runtime_image="registry.example/kaito-jupyter-runtime:1")
    [c] = _pod_spec(render.workload(p, OWNER, NODES[:1], options))["containers"]
    assert c["image"] == "registry.example/kaito-jupyter-runtime:1"
    assert c["command"] == ["python", "-m", "kaito_jupyter.runtimes.inference"]
    assert c["args"][: len(p.inference_args())] == p.inference_args()
    assert c["args"][c["args"].index("--host") + 1] == "0.0.0.0"
    assert c["args"][c["args"].index("--port") + 1] == "5000"


def test_spec_hash_and_runtime_annotate_the_pod_template_so_a_change_rolls_it():
    p = _plan(INFERENCE)
    dep = render.workload(p, OWNER, NODES[:1])
    meta = dep["spec"]["template"]["metadata"]
    assert meta["annotations"][HASH_ANNOTATION] == p.spec_hash
    assert meta["annotations"][RUNTIME_ANNOTATION] == "vllm"
    changed = _plan(with_(INFERENCE, inference__adapters=adapters(1)))
    assert (
        render.workload(changed, OWNER, NODES[:1])["spec"]["template"]["metadata"]["annotations"][
            HASH_ANNOTATION
        ]
        != p.spec_hash
    )


def test_multi_node_is_a_parallel_statefulset_with_a_headless_service_and_the_leader_behind_the_service():
    p = _plan(with_(INFERENCE, resource__count=2))
    svc, headless, sts = render.render(p, OWNER, NODES)
    assert sts["kind"] == "StatefulSet"
    assert sts["spec"]["replicas"] == 2
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert (
        sts["spec"]["serviceName"]
        == headless["metadata"]["name"]
        == "workspace-phi-3-mini-headless"
    )
    assert headless["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == "workspace-phi-3-mini-0"
    env = {e["name"]: e for e in _pod_spec(sts)["containers"][0]["env"]}
    assert env["MASTER_ADDR"]["value"].startswith(
        "workspace-phi-3-mini-0.workspace-phi-3-mini-headless.default.svc"
    )
    assert env["WORLD_SIZE"]["value"] == "2"


def test_adapters_are_pulled_by_init_containers_into_a_shared_volume_with_their_strengths():
    data = with_(INFERENCE, inference__adapters=adapters(2, strength="0.5"))
    spec = _pod_spec(render.workload(_plan(data), OWNER, NODES[:1]))
    assert [i["name"] for i in spec["initContainers"]] == ["puller-adapter-0", "puller-adapter-1"]
    assert spec["initContainers"][0]["args"] == [
        "pull",
        "myacr.azurecr.io/a0:1",
        "--output",
        "/mnt/adapter/adapter-0",
    ]
    [c] = spec["containers"]
    assert {"name": "adapters", "mountPath": "/mnt/adapter"} in c["volumeMounts"]
    assert "--enable-lora" in c["args"]
    assert {"name": "adapter-0", "value": "0.5"} in c["env"]  # as Kaito's images read it
    ours = with_(data, metadata__annotations={RUNTIME_ANNOTATION: "kaito-jupyter"})
    args = _pod_spec(render.workload(_plan(ours), OWNER, NODES[:1]))["containers"][0]["args"]
    assert "adapter-0=/mnt/adapter/adapter-0:0.5" in args


def test_hf_token_comes_from_the_model_access_secret():
    data = with_(
        INFERENCE,
        resource__instanceType="Standard_NC24ads_A100_v4",
        inference__preset={
            "name": "llama-3.1-8b-instruct",
            "presetOptions": {"modelAccessSecret": "hf-token"},
        },
    )
    [c] = _pod_spec(render.workload(_plan(data), OWNER, NODES[:1]))["containers"]
    assert {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}},
    } in c["env"]


def test_a_template_workload_keeps_the_users_pod_and_gets_tolerations_and_affinity():
    template = {
        "metadata": {"labels": {"team": "a"}},
        "spec": {"containers": [{"name": "srv", "image": "nginx"}]},
    }
    data = with_(INFERENCE, inference={"template": template})
    spec = _pod_spec(dep := render.workload(_plan(data), OWNER, NODES[:1]))
    assert spec["containers"] == [{"name": "srv", "image": "nginx"}]
    assert dep["spec"]["template"]["metadata"]["labels"]["team"] == "a"
    assert spec["affinity"]["nodeAffinity"]
    assert len(spec["tolerations"]) == 2


def test_tuning_is_a_job_that_fetches_trains_and_pushes_with_the_push_secret():
    p = _plan(TUNING)
    [job] = render.render(p, render.Owner("workspace-tuning-phi-3", "default", "u"), NODES[:1])
    assert job["kind"] == "Job"
    assert job["spec"]["backoffLimit"] == 0
    spec = _pod_spec(job)
    assert spec["restartPolicy"] == "Never"
    [c] = spec["containers"]
    assert c["command"] == ["python", "-m", "kaito_jupyter.runtimes.tuning"]
    args = c["args"]
    assert args[args.index("--input") + 1].startswith("https://huggingface.co/datasets/")
    assert args[args.index("--output") + 1] == "myacr.azurecr.io/adapters/phi-3:0.0.1"
    assert args[args.index("--push-secret") + 1] == "/mnt/push-secret"
    assert {"name": "push-secret", "secret": {"secretName": "acr-push"}} in spec["volumes"]
    assert c["resources"]["limits"] == {"nvidia.com/gpu": "1"}


def test_tuning_from_a_volume_to_a_volume_mounts_both():
    data = with_(TUNING, tuning__input={"volumeSource": {"persistentVolumeClaim": {"claimName": "data"}}},
                 tuning__output={"volumeSource": {"persistentVolumeClaim": {"claimName": "out"}}})  # fmt: skip
    [job] = render.render(_plan(data), OWNER, NODES[:1])
    spec = _pod_spec(job)
    args = spec["containers"][0]["args"]
    assert args[args.index("--input") + 1] == "/mnt/data"
    assert args[args.index("--output") + 1] == "/mnt/output"
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "data"}} in spec["volumes"]


def test_crd_serves_both_versions_stores_v1beta1_with_status_short_names_and_readme_columns():
    d = crd.definition()
    versions = {v["name"]: v for v in d["spec"]["versions"]}
    assert set(versions) == {"v1alpha1", "v1beta1"}
    assert [v["name"] for v in versions.values() if v["storage"]] == ["v1beta1"]
    assert all(v["subresources"] == {"status": {}} for v in versions.values())
    assert d["spec"]["names"]["shortNames"] == ["wk", "wks"]
    shown = [
        c["name"].upper()
        for c in versions["v1beta1"]["additionalPrinterColumns"]
        if not c.get("priority")
    ]
    assert shown == [
        "INSTANCE",
        "RESOURCEREADY",
        "INFERENCEREADY",
        "JOBSTARTED",
        "WORKSPACESUCCEEDED",
        "WORKSPACEREADY",
        "STATE",
        "AGE",
    ]
    assert FINALIZER == "workspace.finalizer.kaito.sh"


def test_shipped_rbac_manifests_parse_and_grant_the_crd_and_lease_rights():
    controller = list(yaml.safe_load_all(install.manifest("controller-rbac.yaml")))
    rules = controller[0]["rules"]
    assert any(
        "customresourcedefinitions" in r["resources"] and "create" in r["verbs"] for r in rules
    )
    assert any("leases" in r["resources"] for r in rules)
    assert any("workspaces/status" in r["resources"] for r in rules)
    user = list(yaml.safe_load_all(install.manifest("user-rbac.yaml")))
    assert any("services/proxy" in r["resources"] for r in user[0]["rules"])


def _pod(name="ws-0", *, waiting=None, last=None, scheduled=None, ready=False):
    status: dict = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if scheduled:
        status["conditions"].append(
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": scheduled,
            }
        )
    cs = {
        "name": "inference",
        "image": "img:1",
        "ready": ready,
        "state": {"waiting": waiting} if waiting else {"running": {}},
    }
    if last:
        cs["lastState"] = {"terminated": last}
    status["containerStatuses"] = [cs]
    return {"metadata": {"name": name, "annotations": {HASH_ANNOTATION: "h"}}, "status": status}


def test_pod_failures_are_classified_with_kaitos_reasons():
    assert (
        workload.pod_problems(_pod(waiting={"reason": "ImagePullBackOff", "message": "not found"}))[
            0
        ].reason
        == s.IMAGE_PULL_ERROR
    )
    assert (
        workload.pod_problems(_pod(waiting={"reason": "CrashLoopBackOff"}, last={"exitCode": 1}))[
            0
        ].reason
        == s.CRASH_LOOP
    )
    assert (
        workload.pod_problems(
            _pod(
                waiting={"reason": "CrashLoopBackOff"},
                last={"reason": "OOMKilled", "exitCode": 137},
            )
        )[0].reason
        == s.OOM_KILLED
    )
    [p] = workload.pod_problems(
        _pod(scheduled="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    )
    assert p.reason == s.UNSCHEDULABLE and "Insufficient nvidia.com/gpu" in p.message
    assert workload.pod_problems(_pod(ready=True)) == []


def test_a_crash_looping_replica_that_reads_ready_is_still_a_problem():
    pod = _pod(waiting={"reason": "CrashLoopBackOff"}, last={"exitCode": 1}, ready=True)
    dep = {"metadata": {"annotations": {HASH_ANNOTATION: "h"}}, "spec": {"replicas": 1}}
    report = workload.inference_report(dep, [pod], "h")
    derived = s.derive_inference(s.NodeReport(required=1, ready=("n",)), report)
    assert dict((t, st) for t, st, *_ in derived.conditions)["InferenceReady"] == "False"
