"""The provisioner interface: where a workspace's GPU nodes come from.

The reconciler asks a provisioner, once per reconcile, to `ensure` the nodes a workspace needs
and gets a `NodeReport` back at once (never blocking on a cloud's long-running operation: the
report says how far it got and when to look again). `release` removes what `ensure` created
(agent pools, NodeClaims) and says when it is all gone, so the finalizer can be released.
`collect` finds what a provisioner created for workspaces that no longer exist.

Implementations: `byo` (existing nodes matching the label selector), `aks` (one agent pool per
workspace), `nodeclaim` (Karpenter NodeClaims, as Kaito), `local` (this machine).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from kaito_jupyter.controller.status import NodeReport


@dataclass(frozen=True)
class NodeRequest:
    """What one workspace needs from its nodes."""

    namespace: str
    name: str
    uid: str
    instance_type: str | None
    count: int
    labels: dict[str, str] = field(default_factory=dict)  # the label selector's matchLabels
    preferred_nodes: tuple[str, ...] = ()
    gpus_per_node: int = 0
    os_disk_gib: int | None = None  # from the preset
    # Scaled to zero by the idle timeout: keep what ensure created, with no nodes (count 0).
    scaled_to_zero: bool = False


@runtime_checkable
class Provisioner(Protocol):
    name: str

    def ensure(self, request: NodeRequest) -> NodeReport:
        """Create (or find, or resume creating) the nodes; idempotent; returns at once."""

    def release(self, request: NodeRequest) -> bool:
        """Begin removing what ensure created; True once nothing of it is left."""

    def collect(self, live: set[tuple[str, str]]) -> list[str]:
        """Remove what this provisioner created for workspaces not in `live` (namespace,
        name); returns what it removed, for the log and Events."""
