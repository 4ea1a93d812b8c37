"""The agent pool a workspace gets on AKS, as data: its name, its spec, its owner's tags.

Pure: no SDK, no I/O. `aks.py` turns `render(request)` into an SDK `AgentPool` and sends it.

Names. AKS allows `^[a-z][a-z0-9]{0,11}$` for a Linux pool. The name is `kw` + 10 hex digits
of sha256("namespace/name"): the same workspace always maps to the same pool (so a controller
that crashed between "create" and "record" finds its pool again instead of making a second),
and two workspaces collide with odds of about 1 in 10^12; a collision is still caught, because
every pool carries tags naming its workspace and a pool with another owner is never touched.

Tags. Azure tag names may not contain `/`, so the owner is written as `kaito-*` tags rather
than the `kaito.sh/...` label keys the nodes carry.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from kaito_jupyter.provisioners.base import NodeRequest

NAME_PREFIX = "kw"
NAME_RULE = re.compile(r"^[a-z][a-z0-9]{0,11}$")

# Node labels (Kaito's keys, so Kaito's own tooling recognises the nodes).
LABEL_WORKSPACE = "kaito.sh/workspace"
LABEL_WORKSPACE_NAMESPACE = "kaito.sh/workspacenamespace"
# The label AKS puts on every node of a pool; how the nodes of a pool are found.
LABEL_AGENT_POOL = "kubernetes.azure.com/agentpool"
# Kaito's GPU taint; the workloads the reconciler plans tolerate it.
GPU_TAINT = "sku=gpu:NoSchedule"

# Keys Kaito reserves for its own identity labels: a selector that names them is not allowed
# to steer nodes (it could claim another workspace's), so they are dropped from matchLabels.
RESERVED_LABELS = frozenset(
    {
        LABEL_WORKSPACE,
        LABEL_WORKSPACE_NAMESPACE,
        "kaito.sh/ragengine",
        "kaito.sh/ragenginenamespace",
        "karpenter.kaito.sh/workspace-name",
        "karpenter.kaito.sh/workspace-namespace",
    }
)
# Prefixes AKS sets itself or refuses in nodeLabels.
SYSTEM_LABEL_PREFIXES = ("kubernetes.azure.com/", "kubernetes.io/", "k8s.io/")
SYSTEM_LABEL_SUFFIXES = (".kubernetes.io/", ".k8s.io/")

TAG_MANAGED_BY = "kaito-managed-by"
MANAGED_BY = "kaito-jupyter"
TAG_WORKSPACE = "kaito-workspace"
TAG_NAMESPACE = "kaito-workspace-namespace"
TAG_UID = "kaito-workspace-uid"
TAG_CREATED = "kaito-created"

# AKS's own bounds for osDiskSizeGB, and its default.
OS_DISK_MIN_GIB = 30
OS_DISK_MAX_GIB = 2048
OS_DISK_DEFAULT_GIB = 128


def pool_name(namespace: str, name: str) -> str:
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()
    return NAME_PREFIX + digest[:10]


def node_labels(request: NodeRequest) -> dict[str, str]:
    """The selector's matchLabels (without reserved and system keys) plus Kaito's identity."""
    labels = {
        key: value
        for key, value in request.labels.items()
        if key not in RESERVED_LABELS and not _system_label(key)
    }
    labels[LABEL_WORKSPACE] = request.name
    labels[LABEL_WORKSPACE_NAMESPACE] = request.namespace
    return labels


def _system_label(key: str) -> bool:
    prefix = key.partition("/")[0] + "/" if "/" in key else ""
    return key.startswith(SYSTEM_LABEL_PREFIXES) or prefix.endswith(SYSTEM_LABEL_SUFFIXES)


def os_disk_gib(request: NodeRequest) -> int:
    wanted = request.os_disk_gib or OS_DISK_DEFAULT_GIB
    return max(OS_DISK_MIN_GIB, min(OS_DISK_MAX_GIB, int(wanted)))


def owner_tags(request: NodeRequest, created: datetime | None = None) -> dict[str, str]:
    created = created or datetime.now(UTC)
    return {
        TAG_MANAGED_BY: MANAGED_BY,
        TAG_WORKSPACE: request.name,
        TAG_NAMESPACE: request.namespace,
        TAG_UID: request.uid,
        TAG_CREATED: created.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@dataclass(frozen=True)
class PoolSpec:
    """What an agent pool PUT carries (the SDK model's keyword arguments)."""

    name: str
    vm_size: str
    count: int
    node_labels: dict[str, str]
    node_taints: tuple[str, ...]
    os_disk_size_gb: int
    tags: dict[str, str]
    mode: str = "User"
    os_type: str = "Linux"

    def sdk_kwargs(self) -> dict:
        return {
            "vm_size": self.vm_size,
            "count": self.count,
            "mode": self.mode,
            "os_type": self.os_type,
            "node_labels": dict(self.node_labels),
            "node_taints": list(self.node_taints),
            "os_disk_size_gb": self.os_disk_size_gb,
            "tags": dict(self.tags),
        }


def render(request: NodeRequest, created: datetime | None = None) -> PoolSpec:
    """The pool for `request`. Raises ValueError (naming the field) if it cannot have one."""
    if not request.instance_type:
        raise ValueError(
            "resource.instanceType is required for the aks provisioner: it is the pool's VM size"
        )
    if request.count < 1 and not request.scaled_to_zero:
        raise ValueError(f"resource.count must be at least 1, not {request.count}")
    return PoolSpec(
        name=pool_name(request.namespace, request.name),
        vm_size=request.instance_type,
        # An idle workspace keeps its pool at 0 nodes (a User pool may have none): waking it
        # is a scale-up, not a new pool.
        count=0 if request.scaled_to_zero else request.count,
        node_labels=node_labels(request),
        node_taints=(GPU_TAINT,),
        os_disk_size_gb=os_disk_gib(request),
        tags=owner_tags(request, created),
    )


def owner(tags: dict[str, str] | None) -> tuple[str, str] | None:
    """(namespace, name) of the workspace a pool was made for, or None if not ours."""
    tags = tags or {}
    if tags.get(TAG_MANAGED_BY) != MANAGED_BY:
        return None
    namespace, name = tags.get(TAG_NAMESPACE), tags.get(TAG_WORKSPACE)
    if not namespace or not name:
        return None
    return namespace, name


def created_at(tags: dict[str, str] | None) -> datetime | None:
    value = (tags or {}).get(TAG_CREATED)
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


# (below this many seconds, shown in steps of): see progress().
PROGRESS_STEPS = ((60, 15), (600, 60), (3600, 300), (float("inf"), 900))


def progress(ready: int, count: int, seconds: float) -> str:
    """ "1/2 nodes ready, 3m00s": a provisioning pool's counts for its condition message, the time
    rounded down to steps that widen as it grows (15 s under a minute, then 1 min, 5 min, 15 min).

    Why: every change of the message is a status write, and the workspace is looked at every
    few seconds while AKS works (minutes per GPU pool): exact seconds would write each time.
    Rounded, a 5-minute pool's message changes 8 times.
    """
    step = next(step for limit, step in PROGRESS_STEPS if seconds < limit)
    return f"{ready}/{count} nodes ready, {duration(seconds - seconds % step)}"


def duration(seconds: float) -> str:
    """3m12s, 45s, 1h02m: how long a pool has been provisioning, for the condition message."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
