"""Kubernetes objects for a Plan: pure, no I/O (tested without a cluster).

Inference: a Deployment on one node, or on several a StatefulSet (replicas = nodes,
`podManagementPolicy: Parallel`) with the headless Service `<name>-headless` for stable pod
names; the Service `<name>` (ClusterIP, 80 -> 5000 and 29500 for torch distributed). Tuning: a
Job that fetches its input, trains and pushes its output, all in the tuning runtime (it pulls
image inputs and pushes image outputs itself, with the mounted pull/push secrets).

Every pod: the GPUs of the SKU, the tolerations of Kaito's GPU nodes (`sku=gpu`,
`nvidia.com/gpu`), required node affinity to exactly the workspace's nodes, `/health` probes,
the spec hash on the pod template (a spec change rolls it), and the owner reference that lets
Kubernetes collect it with the workspace.
"""

from __future__ import annotations

import copy
import shlex
from dataclasses import dataclass, field
from typing import Any

from kaito_jupyter.controller.plan import (
    HASH_ANNOTATION,
    INFERENCE_PORT,
    OURS,
    RUNTIME_ANNOTATION,
    WORKSPACE_LABEL,
    Plan,
)

MANAGED_BY = {"app.kubernetes.io/managed-by": "kaito-jupyter"}
TORCH_PORT = 29500
ADAPTER_DIR = "/mnt/adapter"
CONFIG_DIR = "/mnt/config"
DATA_DIR = "/mnt/data"
OUTPUT_DIR = "/mnt/output"
HOSTNAME_LABEL = "kubernetes.io/hostname"
GPU_RESOURCE = "nvidia.com/gpu"
TOLERATIONS = (
    {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
    {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
)

# Kaito's runtimes, as its images expect to be started (data: image paths and flags).
KAITO_RUNTIME_COMMANDS = {
    "vllm": ["python3", "/workspace/vllm/inference_api.py"],
    "transformers": ["accelerate", "launch"],
}


@dataclass(frozen=True)
class Owner:
    """The Workspace the objects belong to."""

    name: str
    namespace: str
    uid: str
    api_version: str = "kaito.sh/v1beta1"

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": "Workspace",
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class RenderOptions:
    # Our runtime's image (runtimes/Dockerfile); configurable (kaito.yaml kubernetes.runtime_image).
    runtime_image: str = "ghcr.io/kaito-project/kaito-jupyter-runtime:latest"
    # Adapters are OCI artifacts; oras pulls them, as Kaito's puller does.
    puller_image: str = "ghcr.io/oras-project/oras:v1.2.0"
    image_pull_policy: str = "IfNotPresent"
    pod_annotations: dict[str, str] = field(default_factory=dict)  # e.g. the test bed's


def labels(owner: Owner) -> dict[str, str]:
    return {WORKSPACE_LABEL: owner.name}


def _metadata(name: str, owner: Owner, plan: Plan, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": {**labels(owner), **MANAGED_BY},
        "annotations": {HASH_ANNOTATION: plan.spec_hash, RUNTIME_ANNOTATION: plan.runtime},
        "ownerReferences": [owner.reference()],
        **extra,
    }


def headless_name(name: str) -> str:
    return f"{name}-headless"


# -- pods -------------------------------------------------------------------------------------


def _affinity(nodes: list[str]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": HOSTNAME_LABEL, "operator": "In", "values": sorted(nodes)}
                        ]
                    }
                ]
            }
        }
    }


def _gpu_resources(gpus: int) -> dict[str, Any]:
    if gpus <= 0:
        return {}
    return {"requests": {GPU_RESOURCE: str(gpus)}, "limits": {GPU_RESOURCE: str(gpus)}}


def _probes() -> dict[str, Any]:
    get = {"httpGet": {"path": "/health", "port": INFERENCE_PORT}}
    return {
        # Loading weights takes minutes on a real node; the startup probe covers it, so the
        # liveness probe can be quick to notice a hung server afterwards.
        "startupProbe": {**get, "periodSeconds": 10, "failureThreshold": 180},
        "livenessProbe": {**get, "periodSeconds": 10, "failureThreshold": 3},
        "readinessProbe": {**get, "periodSeconds": 5, "failureThreshold": 3},
    }


def _hf_token_env(plan: Plan) -> list[dict[str, Any]]:
    if not plan.model_access_secret:
        return []
    return [
        {
            "name": "HF_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": plan.model_access_secret, "key": "HF_TOKEN"}},
        }
    ]


def _adapter_init_containers(plan: Plan, options: RenderOptions) -> tuple[list, list, list]:
    """Init containers `puller-<name>` that pull each adapter into /mnt/adapter/<name>."""
    inits, volumes, mounts = [], [], []
    if not plan.adapters:
        return inits, volumes, mounts
    volumes.append({"name": "adapters", "emptyDir": {}})
    mounts.append({"name": "adapters", "mountPath": ADAPTER_DIR})
    for adapter in plan.adapters:
        container: dict[str, Any] = {
            "name": f"puller-{adapter.name}",
            "image": options.puller_image,
            "imagePullPolicy": options.image_pull_policy,
            "args": ["pull", adapter.source, "--output", f"{ADAPTER_DIR}/{adapter.name}"],
            "volumeMounts": [{"name": "adapters", "mountPath": ADAPTER_DIR}],
        }
        if adapter.image_pull_secrets:
            secret = adapter.image_pull_secrets[0]
            vol = f"pull-{adapter.name}"
            volumes.append(
                {
                    "name": vol,
                    "secret": {
                        "secretName": secret,
                        "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                    },
                }
            )
            container["volumeMounts"].append(
                {"name": vol, "mountPath": "/root/.docker", "readOnly": True}
            )
        inits.append(container)
    return inits, volumes, mounts


def _inference_container(plan: Plan, options: RenderOptions, gpus: int) -> dict[str, Any]:
    sources = {a.name: f"{ADAPTER_DIR}/{a.name}" for a in plan.adapters}
    assert plan.preset is not None
    if plan.runtime == OURS:
        image = options.runtime_image
        command = ["python", "-m", "kaito_jupyter.runtimes.inference"]
        args = [*plan.inference_args(sources), "--host", "0.0.0.0", "--port", str(INFERENCE_PORT)]
        args += ["--served-model-name", plan.served_name, "--device", "cuda" if gpus else "auto"]
        if plan.inference_config:
            args += ["--config", f"{CONFIG_DIR}/inference_config.yaml"]
    else:
        image = plan.preset.image or options.runtime_image
        command, args = _kaito_command(plan, gpus, sources)
    return {"name": "inference", "image": image, "command": command, "args": args}


def _kaito_command(plan: Plan, gpus: int, adapters: dict[str, str]) -> tuple[list[str], list[str]]:
    """Kaito's own runtime images: vLLM (its default) or transformers."""
    assert plan.preset is not None
    dtype = {"bfloat16": "bfloat16", "float16": "float16"}.get(plan.dtype, "auto")
    if plan.runtime == "vllm":
        args = [
            f"--served-model-name={plan.served_name}",
            f"--dtype={dtype}",
            f"--port={INFERENCE_PORT}",
            f"--tensor-parallel-size={max(gpus, 1)}",
        ]
        if plan.node_count > 1:
            args.append(f"--pipeline-parallel-size={plan.node_count}")
        if plan.inference_config:
            args.append(f"--kaito-config-file={CONFIG_DIR}/inference_config.yaml")
        if adapters:
            # Kaito's vLLM image loads what the pullers put in /mnt/adapter. vLLM itself has
            # no adapter strength: the variables _strength_env sets serve Kaito's
            # transformers image and are ignored here.
            args.append("--enable-lora")
        return list(KAITO_RUNTIME_COMMANDS["vllm"]), args
    launch = [
        f"--num_processes={max(gpus, 1)}",
        f"--num_machines={plan.node_count}",
        "--machine_rank=$(POD_INDEX)",
        "/workspace/tfs/inference_api.py",
        "--pipeline=text-generation",
        f"--torch_dtype={dtype}",
    ]
    return ["/bin/sh", "-c"], [shlex.join([*KAITO_RUNTIME_COMMANDS["transformers"], *launch])]


def _strength_env(plan: Plan) -> list[dict[str, Any]]:
    """Kaito's images read each adapter's strength from a variable named after it."""
    if plan.runtime == OURS:
        return []  # ours takes them in --adapter NAME=PATH:STRENGTH
    return [{"name": a.name, "value": f"{a.strength:g}"} for a in plan.adapters]


def _distributed_env(plan: Plan, owner: Owner) -> list[dict[str, Any]]:
    if plan.node_count <= 1:
        return []
    leader = f"{owner.name}-0.{headless_name(owner.name)}.{owner.namespace}.svc.cluster.local"
    return [
        {
            "name": "POD_INDEX",
            "valueFrom": {
                "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
            },
        },
        {"name": "MASTER_ADDR", "value": leader},
        {"name": "MASTER_PORT", "value": str(TORCH_PORT)},
        {"name": "WORLD_SIZE", "value": str(plan.node_count)},
    ]


def _pod_template(
    plan: Plan, owner: Owner, nodes: list[str], options: RenderOptions, gpus: int
) -> dict[str, Any]:
    meta = {
        "labels": {**labels(owner), **MANAGED_BY},
        "annotations": {
            HASH_ANNOTATION: plan.spec_hash,
            RUNTIME_ANNOTATION: plan.runtime,
            **options.pod_annotations,
        },
    }
    if plan.runtime == "template":
        template = copy.deepcopy(plan.template or {})
        spec = template.get("spec") or {}
        user_meta = template.get("metadata") or {}
        meta["labels"] = {**(user_meta.get("labels") or {}), **meta["labels"]}
        meta["annotations"] = {**(user_meta.get("annotations") or {}), **meta["annotations"]}
    else:
        inits, volumes, mounts = _adapter_init_containers(plan, options)
        container = _inference_container(plan, options, gpus)
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
        if plan.inference_config:
            volumes.append({"name": "config", "configMap": {"name": plan.inference_config}})
            mounts.append({"name": "config", "mountPath": CONFIG_DIR, "readOnly": True})
        container.update(
            imagePullPolicy=options.image_pull_policy,
            ports=[
                {"name": "http", "containerPort": INFERENCE_PORT},
                {"name": "torch", "containerPort": TORCH_PORT},
            ],
            env=[*_hf_token_env(plan), *_distributed_env(plan, owner), *_strength_env(plan)],
            resources=_gpu_resources(gpus),
            volumeMounts=mounts,
            **_probes(),
        )
        spec = {"containers": [container], "volumes": volumes}
        if inits:
            spec["initContainers"] = inits
        if plan.image_pull_secrets:
            spec["imagePullSecrets"] = [{"name": s} for s in plan.image_pull_secrets]
    spec["tolerations"] = _merge_tolerations(spec.get("tolerations"))
    spec["affinity"] = {**(spec.get("affinity") or {}), **_affinity(nodes)}
    return {"metadata": meta, "spec": spec}


def _merge_tolerations(existing: list | None) -> list[dict[str, Any]]:
    out = list(existing or [])
    for t in TOLERATIONS:
        if t not in out:
            out.append(dict(t))
    return out


# -- objects ----------------------------------------------------------------------------------


def services(plan: Plan, owner: Owner) -> list[dict[str, Any]]:
    selector = dict(labels(owner))
    if plan.node_count > 1:
        # Requests go to the leader; the others are its workers.
        selector["statefulset.kubernetes.io/pod-name"] = f"{owner.name}-0"
    out = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(owner.name, owner, plan),
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": [
                    {"name": "http", "port": 80, "targetPort": INFERENCE_PORT, "protocol": "TCP"},
                    {
                        "name": "torch",
                        "port": TORCH_PORT,
                        "targetPort": TORCH_PORT,
                        "protocol": "TCP",
                    },
                ],
            },
        }
    ]
    if plan.node_count > 1:
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": _metadata(headless_name(owner.name), owner, plan),
                "spec": {
                    "clusterIP": "None",
                    "publishNotReadyAddresses": True,
                    "selector": labels(owner),
                    "ports": [
                        {
                            "name": "torch",
                            "port": TORCH_PORT,
                            "targetPort": TORCH_PORT,
                            "protocol": "TCP",
                        }
                    ],
                },
            }
        )
    return out


def workload(
    plan: Plan,
    owner: Owner,
    nodes: list[str],
    options: RenderOptions = RenderOptions(),
    *,
    gpus: int | None = None,
) -> dict[str, Any]:
    """The inference Deployment/StatefulSet or the tuning Job."""
    gpus = plan.gpus_per_node if gpus is None else gpus
    if plan.mode == "tuning":
        return tuning_job(plan, owner, nodes, options, gpus=gpus)
    template = _pod_template(plan, owner, nodes, options, gpus)
    selector = {"matchLabels": labels(owner)}
    if plan.node_count > 1:
        return {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": _metadata(owner.name, owner, plan),
            "spec": {
                "replicas": plan.node_count,
                "podManagementPolicy": "Parallel",
                "serviceName": headless_name(owner.name),
                "selector": selector,
                "template": template,
            },
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner.name, owner, plan),
        "spec": {
            "replicas": 1,
            "selector": selector,
            # One GPU node holds one replica: surging a second would wait for a GPU forever.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
            },
            "template": template,
        },
    }


def tuning_job(
    plan: Plan,
    owner: Owner,
    nodes: list[str],
    options: RenderOptions = RenderOptions(),
    *,
    gpus: int | None = None,
) -> dict[str, Any]:
    assert plan.tuning is not None
    gpus = plan.gpus_per_node if gpus is None else gpus
    t = plan.tuning
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "work", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "work", "mountPath": "/mnt/work"},
    ]
    inputs: list[str] = [*t.input_urls, *filter(None, [t.input_image])]
    if t.input_volume is not None:
        volumes.append({"name": "data", **t.input_volume})
        mounts.append({"name": "data", "mountPath": DATA_DIR, "readOnly": True})
        inputs = [DATA_DIR]
    output = t.output_image or OUTPUT_DIR
    if t.output_volume is not None:
        volumes.append({"name": "output", **t.output_volume})
        mounts.append({"name": "output", "mountPath": OUTPUT_DIR})
    args = [*plan.tuning_args(inputs=inputs, output=output), "--work-dir", "/mnt/work"]
    if t.push_secret:
        volumes.append({"name": "push-secret", "secret": {"secretName": t.push_secret}})
        mounts.append({"name": "push-secret", "mountPath": "/mnt/push-secret", "readOnly": True})
        args += ["--push-secret", "/mnt/push-secret"]
    if t.input_pull_secrets:
        volumes.append({"name": "pull-secret", "secret": {"secretName": t.input_pull_secrets[0]}})
        mounts.append({"name": "pull-secret", "mountPath": "/mnt/pull-secret", "readOnly": True})
        args += ["--pull-secret", "/mnt/pull-secret"]
    if t.config:
        volumes.append({"name": "config", "configMap": {"name": t.config}})
        mounts.append({"name": "config", "mountPath": CONFIG_DIR, "readOnly": True})
        args += ["--config", f"{CONFIG_DIR}/training_config.yaml"]
    container = {
        "name": "tuning",
        "image": options.runtime_image,
        "imagePullPolicy": options.image_pull_policy,
        "command": ["python", "-m", "kaito_jupyter.runtimes.tuning"],
        "args": args,
        "env": _hf_token_env(plan),
        "resources": _gpu_resources(gpus),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes,
        "tolerations": _merge_tolerations(None),
        "affinity": _affinity(nodes),
    }
    if plan.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in plan.image_pull_secrets]
    meta = {
        "labels": {**labels(owner), **MANAGED_BY},
        "annotations": {
            HASH_ANNOTATION: plan.spec_hash,
            RUNTIME_ANNOTATION: plan.runtime,
            **options.pod_annotations,
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(owner.name, owner, plan),
        "spec": {
            "backoffLimit": 0,  # a failed tuning run is reported, not retried blindly
            "template": {"metadata": meta, "spec": spec},
        },
    }


def render(
    plan: Plan,
    owner: Owner,
    nodes: list[str],
    options: RenderOptions = RenderOptions(),
    *,
    gpus: int | None = None,
) -> list[dict[str, Any]]:
    """Every object the workspace needs, in the order they are applied."""
    if plan.mode == "tuning":
        return [tuning_job(plan, owner, nodes, options, gpus=gpus)]
    return [*services(plan, owner), workload(plan, owner, nodes, options, gpus=gpus)]
