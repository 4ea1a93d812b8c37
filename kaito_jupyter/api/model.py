"""Typed model of Kaito's Workspace (kaito.sh/v1alpha1 and v1beta1).

Field names are Kaito's (camelCase on the wire, snake_case in Python). Unknown fields are
rejected, as `kubectl apply` with strict field validation would; the schemaless parts Kaito
leaves to Kubernetes (`inference.template`, `volumeSource`, metadata labels/annotations) are
kept as plain dicts.

Round trip: `Workspace.from_dict(d).to_dict() == d` for any valid `d`; nothing the user did not
write is added (defaults are exposed as properties, e.g. `ResourceSpec.node_count`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

GROUP = "kaito.sh"
VERSIONS = ("v1alpha1", "v1beta1")
API_VERSIONS = tuple(f"{GROUP}/{v}" for v in VERSIONS)
KIND = "Workspace"


class _Spec(BaseModel):
    # strict: "1" is not an integer and 1.0 is not a string, as for the Kubernetes API server.
    model_config = ConfigDict(
        extra="forbid", strict=True, populate_by_name=True, validate_assignment=False
    )

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")


class LabelSelectorRequirement(_Spec):
    key: str
    operator: str
    values: list[str] | None = None


class LabelSelector(_Spec):
    match_labels: dict[str, str] | None = Field(default=None, alias="matchLabels")
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, alias="matchExpressions"
    )

    def as_map(self) -> dict[str, str]:
        """matchLabels plus single-value `In` expressions: the labels a provisioned node gets."""
        labels = dict(self.match_labels or {})
        for req in self.match_expressions or []:
            if req.operator == "In" and req.values and len(req.values) == 1:
                labels[req.key] = req.values[0]
        return labels


class PartitionSpec(_Spec):
    mode: str
    profile: str | None = None
    count: int | None = None


class ResourceSpec(_Spec):
    count: int | None = None
    instance_type: str | None = Field(default=None, alias="instanceType")
    label_selector: LabelSelector | None = Field(default=None, alias="labelSelector")
    preferred_nodes: list[str] | None = Field(default=None, alias="preferredNodes")
    partition: PartitionSpec | None = None  # v1beta1

    @property
    def node_count(self) -> int:
        # Kaito's CRD defaults count to 1.
        return 1 if self.count is None else self.count


class PresetOptions(_Spec):
    image: str | None = None
    image_pull_secrets: list[str] | None = Field(default=None, alias="imagePullSecrets")
    model_access_secret: str | None = Field(default=None, alias="modelAccessSecret")


class PresetSpec(_Spec):
    name: str
    access_mode: str | None = Field(default=None, alias="accessMode")
    preset_options: PresetOptions | None = Field(default=None, alias="presetOptions")


class DataSource(_Spec):
    name: str | None = None
    urls: list[str] | None = None
    volume: dict[str, Any] | None = Field(default=None, alias="volumeSource")
    image: str | None = None
    image_pull_secrets: list[str] | None = Field(default=None, alias="imagePullSecrets")


class AdapterSpec(_Spec):
    source: DataSource | None = None
    strength: str | None = None

    @property
    def strength_value(self) -> float:
        """The strength as a number (Kaito's default is "1.0"). Call after validation."""
        return 1.0 if self.strength is None else float(self.strength)


class InferenceSpec(_Spec):
    preset: PresetSpec | None = None
    template: dict[str, Any] | None = None
    config: str | None = None
    adapters: list[AdapterSpec] | None = None


class DataDestination(_Spec):
    volume: dict[str, Any] | None = Field(default=None, alias="volumeSource")
    image: str | None = None
    image_push_secret: str | None = Field(default=None, alias="imagePushSecret")


class TuningSpec(_Spec):
    preset: PresetSpec | None = None
    method: str | None = None
    config: str | None = None
    input: DataSource | None = None
    output: DataDestination | None = None


class Condition(_Spec):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = Field(default=None, alias="lastTransitionTime")
    observed_generation: int | None = Field(default=None, alias="observedGeneration")


class WorkspaceStatus(_Spec):
    # Status is written by controllers, not users: accept what newer Kaito versions add.
    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True)

    worker_nodes: list[str] | None = Field(default=None, alias="workerNodes")
    conditions: list[Condition] | None = None
    state: str | None = None
    target_node_count: int | None = Field(default=None, alias="targetNodeCount")


class ObjectMeta(_Spec):
    # Kubernetes owns metadata; keep every field it may carry (uid, managedFields, ...).
    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True)

    name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    generation: int | None = None
    uid: str | None = None
    creation_timestamp: str | None = Field(default=None, alias="creationTimestamp")
    deletion_timestamp: str | None = Field(default=None, alias="deletionTimestamp")
    finalizers: list[str] | None = None


class Workspace(_Spec):
    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    resource: ResourceSpec | None = None
    inference: InferenceSpec | None = None
    tuning: TuningSpec | None = None
    status: WorkspaceStatus | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Workspace:
        """Parse and check a Workspace; raises kaito_jupyter.errors.ValidationError."""
        from kaito_jupyter.api.parse import workspace_from_dict

        return workspace_from_dict(data)

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"

    @property
    def version(self) -> str:
        return self.api_version.rsplit("/", 1)[-1]

    @property
    def mode(self) -> str:
        """ "inference" or "tuning" (validation guarantees exactly one)."""
        return "tuning" if self.tuning is not None else "inference"

    @property
    def preset_name(self) -> str | None:
        spec = self.tuning if self.tuning is not None else self.inference
        return spec.preset.name if spec is not None and spec.preset is not None else None

    def condition(self, type_: str) -> Condition | None:
        for cond in (self.status.conditions if self.status else None) or []:
            if cond.type == type_:
                return cond
        return None
