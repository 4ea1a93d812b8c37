"""The `kaito.sh` Workspace CustomResourceDefinition kaito-jupyter installs when a cluster has
none: Kaito's group, kind, versions (v1alpha1 and v1beta1 served, v1beta1 stored), short names
and printer columns, so `kubectl get workspace` reads as in Kaito's README.

What can be enforced at apply time is in the schema, so the API server itself refuses it with
no webhook: enums, one-ofs, the inference/tuning toggle, the immutable preset, tuning method,
instance type and label selector (CEL `x-kubernetes-validations`; transition rules see the old
object). The rest of Kaito's rules (a preset that fits the instance type, say) need the catalog:
admission checks them on our side, and the controller reports them in status.
"""

from __future__ import annotations

from typing import Any

from kaito_jupyter.api.model import GROUP, KIND

NAME = f"workspaces.{GROUP}"
STORED_VERSION = "v1beta1"
VERSIONS = ("v1alpha1", "v1beta1")
# Marks a CRD kaito-jupyter installed (so it may upgrade it; Kaito's own is never touched).
OWNER_LABEL = "app.kubernetes.io/managed-by"
OWNER_VALUE = "kaito-jupyter"
SCHEMA_REVISION_ANNOTATION = "kaito-jupyter.io/crd-revision"
SCHEMA_REVISION = "1"

# A Service is named after its workspace, so names must be DNS-1035 labels.
NAME_RULE = {
    "rule": "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63",
    "message": "metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', "
    "starting with a letter, at most 63 characters): the workspace's Service takes its name",
}


def _str(**extra: Any) -> dict[str, Any]:
    return {"type": "string", **extra}


def _strings(max_items: int = 16, **extra: Any) -> dict[str, Any]:
    return {
        "type": "array",
        "maxItems": max_items,
        "items": {"type": "string", "maxLength": 2048},
        **extra,
    }


def _free() -> dict[str, Any]:
    # Kubernetes' own types (a pod template, a volume source): Kubernetes checks them where used.
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _label_selector() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "matchExpressions": {
                "type": "array",
                "maxItems": 32,
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": _str(),
                        "operator": _str(enum=["In", "NotIn", "Exists", "DoesNotExist"]),
                        "values": _strings(64),
                    },
                },
            },
        },
        "x-kubernetes-map-type": "atomic",
    }


def _preset() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": _str(minLength=1, maxLength=253),
            "accessMode": _str(enum=["public", "private"]),
            "presetOptions": {
                "type": "object",
                "properties": {
                    "image": _str(maxLength=2048),
                    "imagePullSecrets": _strings(),
                    "modelAccessSecret": _str(maxLength=253),
                },
            },
        },
        "x-kubernetes-validations": [
            {
                "rule": "self.name == oldSelf.name",
                "message": "preset name is immutable: delete "
                "the workspace and create a new one to serve another preset",
            },
        ],
    }


def _data_source(*, exactly_one: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "name": _str(maxLength=63),
            "urls": _strings(64),
            "volumeSource": _free(),
            "image": _str(maxLength=2048),
            "imagePullSecrets": _strings(),
        },
    }
    if exactly_one:
        schema["x-kubernetes-validations"] = [
            {
                "rule": "(has(self.urls) ? 1 : 0) + (has(self.volumeSource) ? 1 : 0) + "
                "(has(self.image) ? 1 : 0) == 1",
                "message": "tuning.input: set exactly one of urls, volumeSource or image",
            }
        ]
    return schema


def _adapter() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "source": _data_source(exactly_one=False),
            "strength": _str(pattern=r"^(0(\.[0-9]+)?|1(\.0+)?)$"),
        },
        "x-kubernetes-validations": [
            {
                "rule": "has(self.source) && has(self.source.name) && has(self.source.image)",
                "message": "an adapter needs source.name and source.image",
            },
        ],
    }


def _resource() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["labelSelector"],
        "properties": {
            "count": {"type": "integer", "minimum": 1, "maximum": 100},
            "instanceType": _str(maxLength=128),
            "labelSelector": _label_selector(),
            "preferredNodes": _strings(100),
            "partition": _free(),
        },
        "x-kubernetes-validations": [
            {
                "rule": "has(self.instanceType) == has(oldSelf.instanceType) && "
                "(!has(self.instanceType) || self.instanceType == oldSelf.instanceType)",
                "message": "resource.instanceType is immutable",
            },
            {
                "rule": "self.labelSelector == oldSelf.labelSelector",
                "message": "resource.labelSelector is immutable",
            },
        ],
    }


def _inference() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "preset": _preset(),
            "template": _free(),
            "config": _str(maxLength=253),
            "adapters": {"type": "array", "maxItems": 10, "items": _adapter()},
        },
        "x-kubernetes-validations": [
            {
                "rule": "has(self.preset) != has(self.template)",
                "message": "inference: set exactly one of preset or template",
            },
            {
                "rule": "!has(self.adapters) || has(self.preset)",
                "message": "inference.adapters need a preset (a template serves its own model)",
            },
            {
                "rule": "has(self.preset) == has(oldSelf.preset)",
                "message": "inference: cannot switch between preset and template",
            },
        ],
    }


def _tuning() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["preset", "input", "output"],
        "properties": {
            "preset": _preset(),
            "method": _str(enum=["lora", "qlora"]),
            "config": _str(maxLength=253),
            "input": _data_source(exactly_one=True),
            "output": {
                "type": "object",
                "properties": {
                    "volumeSource": _free(),
                    "image": _str(maxLength=2048),
                    "imagePushSecret": _str(maxLength=253),
                },
                "x-kubernetes-validations": [
                    {
                        "rule": "has(self.volumeSource) != has(self.image)",
                        "message": "tuning.output: set exactly one of volumeSource or image",
                    },
                    {
                        "rule": "!has(self.image) || has(self.imagePushSecret)",
                        "message": "tuning.output.image needs imagePushSecret to push with",
                    },
                ],
            },
        },
        "x-kubernetes-validations": [
            {
                "rule": "(has(self.method) ? self.method : 'qlora') == "
                "(has(oldSelf.method) ? oldSelf.method : 'qlora')",
                "message": "tuning.method is immutable",
            },
        ],
    }


def _status() -> dict[str, Any]:
    return {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "workerNodes": _strings(100),
            "state": _str(),
            "targetNodeCount": {"type": "integer"},
            "conditions": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": {
                    "type": "object",
                    "required": ["type", "status"],
                    "properties": {
                        "type": _str(),
                        "status": _str(enum=["True", "False", "Unknown"]),
                        "reason": _str(),
                        "message": _str(),
                        "lastTransitionTime": _str(format="date-time"),
                        "observedGeneration": {"type": "integer"},
                    },
                },
            },
        },
    }


def schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "apiVersion": _str(),
            "kind": _str(),
            "metadata": {"type": "object"},
            "resource": _resource(),
            "inference": _inference(),
            "tuning": _tuning(),
            "status": _status(),
        },
        "x-kubernetes-validations": [
            NAME_RULE,
            {
                "rule": "has(self.inference) != has(self.tuning)",
                "message": "set exactly one of inference or tuning",
            },
            {
                "rule": "has(self.inference) == has(oldSelf.inference)",
                "message": "a workspace cannot switch between inference and tuning: delete it "
                "and create a new one",
            },
        ],
    }


def _condition_column(name: str, type_: str, priority: int = 0) -> dict[str, Any]:
    return {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{type_}")].status',
        "priority": priority,
        "description": f"the {type_} condition",
    }


def printer_columns() -> list[dict[str, Any]]:
    """NAME comes first by itself; then Kaito's README columns and its v1beta1 ones."""
    return [
        {"name": "Instance", "type": "string", "jsonPath": ".resource.instanceType",
         "description": "GPU instance type"},
        _condition_column("ResourceReady", "ResourceReady"),
        _condition_column("InferenceReady", "InferenceReady"),
        _condition_column("JobStarted", "JobStarted"),
        _condition_column("WorkspaceSucceeded", "WorkspaceSucceeded"),
        _condition_column("WorkspaceReady", "WorkspaceReady"),
        {"name": "TargetNodeCount", "type": "integer", "jsonPath": ".status.targetNodeCount",
         "priority": 1, "description": "nodes the workspace runs on"},
        {"name": "State", "type": "string", "jsonPath": ".status.state",
         "description": "Pending, Ready, NotReady; Running, Succeeded, Failed"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]  # fmt: skip


def definition() -> dict[str, Any]:
    """The CRD object (apiextensions.k8s.io/v1)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": NAME,
            "labels": {OWNER_LABEL: OWNER_VALUE},
            "annotations": {SCHEMA_REVISION_ANNOTATION: SCHEMA_REVISION},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": "workspaces",
                "singular": "workspace",
                "shortNames": ["wk", "wks"],
                "categories": ["kaito"],
            },
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": version == STORED_VERSION,
                    "schema": {"openAPIV3Schema": schema()},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns(),
                }
                for version in VERSIONS
            ],
            # The two versions share one schema: the API server converts by rewriting
            # apiVersion only (Kaito's own v1alpha1 -> v1beta1 differences are field-compatible).
            "conversion": {"strategy": "None"},
        },
    }


def is_ours(crd: dict[str, Any]) -> bool:
    return ((crd.get("metadata") or {}).get("labels") or {}).get(OWNER_LABEL) == OWNER_VALUE
