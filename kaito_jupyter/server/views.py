"""Pure conversions from the core's values to the wire models (no I/O, tested without a server)."""

from __future__ import annotations

import yaml

from kaito_jupyter import catalog, commands, cost
from kaito_jupyter.api.wire import StoredWorkspace
from kaito_jupyter.backends.base import Applied, Event, Node
from kaito_jupyter.errors import KaitoError, ValidationError
from kaito_jupyter.server import wire


def snippet(name: str) -> str:
    """A notebook cell that chats with the workspace: what the sidebar's copy button gives."""
    return f"%%kaito chat {name}\nWhat can you do?"


def summary(
    stored: StoredWorkspace,
    *,
    endpoint: str | None = None,
    prices: dict[str, float] | None = None,
) -> wire.WorkspaceSummary:
    """One workspace as the sidebar shows it. `prices`: node name -> price per hour."""
    ws = stored.workspace
    status = ws.status
    nodes = list((status.worker_nodes if status else None) or [])
    instance_type = ws.resource.instance_type if ws.resource else None
    count = ws.resource.node_count if ws.resource else 1
    # The nodes' own prices when every one is known, else the list price of what it asks for.
    hourly = basis = None
    if prices and nodes and all(n in prices for n in nodes):
        hourly = round(sum(prices[n] for n in nodes), 4)
    elif instance_type:
        hourly = cost.hourly_cost(instance_type, count)
    if hourly is not None:
        basis = cost.basis_note(instance_type)
    conditions = [
        wire.Condition(
            type=c.type,
            status=c.status,
            reason=c.reason,
            message=c.message,
            lastTransitionTime=c.last_transition_time,
        )
        for c in ((status.conditions if status else None) or [])
    ]
    return wire.WorkspaceSummary(
        name=stored.name,
        namespace=stored.namespace,
        mode="tuning" if ws.tuning is not None else "inference",
        preset=ws.preset_name,
        phase=commands.phase(stored),
        instanceType=instance_type,
        nodeCount=count,
        created=ws.metadata.creation_timestamp,
        conditions=conditions,
        workerNodes=nodes,
        endpoint=endpoint,
        costPerHour=hourly,
        costBasis=basis,
        resourceVersion=stored.resource_version,
        snippet=snippet(stored.name) if ws.tuning is None else "",
    )


def detail(stored: StoredWorkspace, events: list[Event], **kwargs) -> wire.WorkspaceDetail:
    return wire.WorkspaceDetail(
        summary=summary(stored, **kwargs),
        yaml=yaml.safe_dump(stored.spec(), sort_keys=False),
        events=[event(e) for e in events],
    )


def event(e: Event) -> wire.EventInfo:
    return wire.EventInfo(
        time=e.time, type=e.type, reason=e.reason, message=e.message, object=e.object, count=e.count
    )


def node(n: Node) -> wire.NodeInfo:
    return wire.NodeInfo(
        name=n.name,
        instanceType=n.instance_type,
        gpuModel=n.gpu_model,
        gpus=n.gpus,
        gpusUsed=n.gpus_used,
        gpuMemoryGib=n.gpu_memory_gib,
        ready=n.ready,
        workspaces=list(n.workspaces),
        pricePerHour=n.price_per_hour,
    )


def prices(nodes: list[Node]) -> dict[str, float]:
    return {n.name: n.price_per_hour for n in nodes if n.price_per_hour is not None}


def presets(*, include_deprecated: bool = False) -> wire.PresetList:
    items = []
    for p in catalog.presets().values():
        if p.deprecated and not include_deprecated:
            continue
        items.append(
            wire.PresetInfo(
                name=p.name,
                family=p.family,
                paramsB=p.params_b,
                contextLength=p.context_length,
                gpuMemoryGib=p.memory_for("inference"),
                tuning=p.tuning.supported,
                cpu=p.cpu,
                deprecated=p.deprecated,
                fits=[s.name for s in catalog.skus_that_fit(p)],
            )
        )
    return wire.PresetList(items=items)


def skus(cloud: str | None = None) -> wire.SkuList:
    return wire.SkuList(
        items=[
            wire.SkuInfo(
                name=s.name,
                cloud=s.cloud,
                gpus=s.gpus,
                gpuModel=s.gpu_model,
                gpuMemoryGib=s.gpu_memory_gib,
                vcpus=s.vcpus,
                memoryGib=s.memory_gib,
                pricePerHour=s.price_per_hour,
                priceBasis=cost.basis_note(s.name) if s.price_per_hour is not None else None,
            )
            for s in catalog.skus().values()
            if cloud is None or s.cloud == cloud
        ]
    )


def applied(items: list[Applied], warnings: list[str] | None = None) -> wire.AppliedList:
    return wire.AppliedList(
        items=[
            wire.AppliedItem(
                name=a.workspace.name, namespace=a.workspace.namespace, action=a.action
            )
            for a in items
        ],
        warnings=warnings or [],
    )


def error(exc: KaitoError, code: str) -> wire.ErrorBody:
    issues = [str(i) for i in exc.issues] if isinstance(exc, ValidationError) else []
    message = exc.message.split("\n", 1)[0] if issues else exc.message
    return wire.ErrorBody(code=code, message=message, hint=exc.hint, issues=issues)
