"""Which provisioner `auto` means for a cluster (used by provisioners.select).

- `aks` when the AKS cluster's coordinates (subscription, resource group, cluster) are
  configured, and the cluster behind the kubeconfig is that one: its nodes carry AKS's
  `kubernetes.azure.com/cluster` label naming the cluster's default node resource group
  (`MC_<group>_<cluster>_<region>`). Coordinates for another cluster never create pools here.
- `nodeclaim` when the cluster serves karpenter.sh/v1 NodeClaims (the CRD is installed).
- `byo` otherwise: nodes that already exist.

A cluster with a custom node resource group is not recognised: set `provisioner: aks`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

AKS_CLUSTER_LABEL = "kubernetes.azure.com/cluster"


def aks_configured(settings: Any) -> bool:
    azure = settings.azure
    return bool(azure.subscription_id and azure.resource_group and azure.cluster_name)


def same_aks_cluster(settings: Any, nodes: list[dict[str, Any]]) -> bool:
    """Whether `nodes` are the configured AKS cluster's (True when there are none yet)."""
    azure = settings.azure
    prefix = f"MC_{azure.resource_group}_{azure.cluster_name}_".lower()
    groups = {((n.get("metadata") or {}).get("labels") or {}).get(AKS_CLUSTER_LABEL) for n in nodes}
    groups.discard(None)
    if not nodes:
        return True
    return any(str(group).lower().startswith(prefix) for group in groups)


def choose(
    settings: Any, kube: Any, list_nodes: Callable[[], list[dict[str, Any]]] | None = None
) -> str:
    """The provisioner's name: the configured one, or what `auto` detects."""
    if settings.provisioner != "auto":
        return settings.provisioner
    if aks_configured(settings):
        nodes = list_nodes() if list_nodes is not None else []
        if same_aks_cluster(settings, nodes):
            return "aks"
        log.warning(
            "AKS cluster %s/%s is configured, but the nodes of this cluster are not its: "
            "not creating agent pools (set provisioner: aks to insist)",
            settings.azure.resource_group,
            settings.azure.cluster_name,
        )
    if kube is not None:
        from kaito_jupyter.provisioners.nodeclaim import served

        # A failed discovery raises: the caller tries again rather than guess.
        if served(kube):
            return "nodeclaim"
    return "byo"


class AutoProvisioner:
    """`auto`, decided on first use rather than at construction: the controller's node
    informer has synced by then, no API call is made before the reconciler runs, and a
    discovery that fails is tried again at the next reconcile instead of settling on a
    guess. `build(name)` makes the provisioner chosen."""

    def __init__(
        self,
        settings: Any,
        kube: Any,
        list_nodes: Callable[[], list[dict[str, Any]]] | None,
        build: Callable[[str], Any],
    ):
        self.settings = settings
        self.kube = kube
        self.list_nodes = list_nodes
        self.build = build
        self.chosen: Any = None

    @property
    def name(self) -> str:
        return self.chosen.name if self.chosen is not None else "auto"

    def _provisioner(self):
        if self.chosen is None:
            choice = choose(self.settings, self.kube, self.list_nodes)
            self.chosen = self.build(choice)
            log.info("provisioner auto: using %s", self.chosen.name)
        return self.chosen

    def ensure(self, request):
        return self._provisioner().ensure(request)

    def release(self, request) -> bool:
        return self._provisioner().release(request)

    def collect(self, live) -> list[str]:
        return self._provisioner().collect(live)
