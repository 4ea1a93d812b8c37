"""What a workspace's nodes cost: the list price per hour of its instance type, from
presets/skus.yaml, times its node count; and the total since its nodes were created.

The prices are list prices (pay-as-you-go, Linux, on-demand) in USD for one region per cloud;
`BASIS` says which, when they were read, and that they are not verified. Every surface that
shows a cost shows `basis_note()` with it, so nobody mistakes an estimate for a bill.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from kaito_jupyter import catalog


@dataclass(frozen=True)
class PriceBasis:
    cloud: str
    region: str
    currency: str
    as_of: str
    source: str
    verified: bool


BASIS = {
    "azure": PriceBasis(
        "azure",
        "eastus",
        "USD",
        "2024-2025, written down 2026-12-03",
        "Azure Linux virtual machines pay-as-you-go list, from memory",
        verified=False,
    ),
    "aws": PriceBasis(
        "aws",
        "us-east-1",
        "USD",
        "2024-2025, written down 2026-12-03",
        "EC2 on-demand Linux list, from memory",
        verified=False,
    ),
}


def price_per_hour(instance_type: str | None) -> float | None:
    """List price of one node of `instance_type` per hour, or None where unknown."""
    sku = catalog.find_sku(instance_type) if instance_type else None
    return sku.price_per_hour if sku else None


def hourly_cost(instance_type: str | None, count: int) -> float | None:
    price = price_per_hour(instance_type)
    return None if price is None else round(price * max(count, 0), 4)


def cost_since(
    instance_type: str | None, count: int, since: datetime, now: datetime | None = None
) -> float | None:
    """What `count` nodes have cost since `since` (their pool's creation), at list price."""
    hourly = hourly_cost(instance_type, count)
    if hourly is None:
        return None
    now = now or datetime.now(UTC)
    hours = max(0.0, (now - since).total_seconds() / 3600)
    return round(hourly * hours, 2)


def basis_note(instance_type: str | None) -> str:
    sku = catalog.find_sku(instance_type) if instance_type else None
    basis = BASIS.get(sku.cloud) if sku else None
    if basis is None:
        return "no list price known"
    checked = "verified" if basis.verified else "unverified"
    return f"{basis.cloud} {basis.region} list price ({basis.as_of}; {checked})"


def describe(instance_type: str | None, count: int) -> str:
    """ "$6.12/h (2 x $3.06, azure eastus list price (...; unverified))", or why not."""
    price = price_per_hour(instance_type)
    if price is None:
        return f"no list price known for {instance_type or 'an unset instance type'}"
    total = hourly_cost(instance_type, count)
    return f"${total:.2f}/h ({count} x ${price:.2f}, {basis_note(instance_type)})"


def nodes_text(nodes) -> str | None:
    """The hourly list price of a workspace's nodes (backends.base.Node values), with its
    basis, for `kaito describe`; None when no node's price is known."""
    priced = [n for n in nodes if n.price_per_hour is not None]
    if not priced:
        return None
    total = sum(n.price_per_hour for n in priced)
    unknown = len(nodes) - len(priced)
    extra = f", {unknown} node(s) of unknown price" if unknown else ""
    return f"${total:.2f}/h for {len(priced)} node(s){extra}; {basis_note(priced[0].instance_type)}"


# ----------------------------------------------------------------- a workspace's nodes


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def workspace_nodes(ws, nodes) -> list:
    """The nodes of `nodes` that run `ws`: its status' workerNodes, else those that place it."""
    placed = set((ws.status.worker_nodes if ws.status else None) or [])
    key = f"{ws.namespace}/{ws.name}"
    return [n for n in nodes if n.name in placed or key in n.workspaces]


def workspace_hourly(ws, nodes=()) -> float | None:
    """What `ws` costs per hour: the list prices of the nodes it runs on where they are known,
    else its SKU's list price times its node count (a pool that is still coming up)."""
    mine = workspace_nodes(ws, nodes)
    if mine and all(n.price_per_hour is not None for n in mine):
        return round(sum(n.price_per_hour for n in mine), 4)
    itype = ws.resource.instance_type if ws.resource else None
    count = (ws.status.target_node_count if ws.status else None) or (
        ws.resource.node_count if ws.resource else 1
    )
    return hourly_cost(itype, count)


def workspace_so_far(ws, nodes=(), now: datetime | None = None) -> float | None:
    """What the nodes running `ws` have cost since each was created, at list price; None when
    no node with a known price and creation time runs it (nothing billed that we can see)."""
    now = now or datetime.now(UTC)
    total, seen = 0.0, False
    for n in workspace_nodes(ws, nodes):
        since = _parse_time(n.created)
        if n.price_per_hour is None or since is None:
            continue
        seen = True
        total += n.price_per_hour * max(0.0, (now - since).total_seconds() / 3600)
    return round(total, 2) if seen else None


def hourly_text(value: float | None) -> str:
    return "-" if value is None else f"${value:.2f}"


def workspace_line(ws, nodes=(), now: datetime | None = None) -> str:
    """`kaito describe`'s Cost line: per hour, the total so far since its nodes were created, and
    the basis (list prices, not a bill)."""
    itype = ws.resource.instance_type if ws.resource else None
    hourly = workspace_hourly(ws, nodes)
    if hourly is None:
        return f"no list price known for {itype or 'an unset instance type'}"
    so_far = workspace_so_far(ws, nodes, now)
    since = (
        f"${so_far:.2f} so far since its nodes were created"
        if so_far is not None
        else "no node running yet"
    )
    return f"${hourly:.2f}/h; {since} ({basis_note(itype)})"
