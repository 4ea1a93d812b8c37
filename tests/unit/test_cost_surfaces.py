"""The cost every surface shows: COST/H in `get -o wide` (CLI and magic), the Cost line of
`describe`; from the workspace's nodes' prices, else its SKU's list price times its count."""

from __future__ import annotations

from datetime import UTC, datetime

import yaml

from kaito_jupyter import api, commands, cost
from kaito_jupyter.api import table
from kaito_jupyter.backends.base import Node
from kaito_jupyter.workspace_text import describe_text

from .memory_backend import MemoryBackend, ready
from .output import columns
from .samples import INFERENCE, with_
from .test_magics import backend, ip, kaito  # noqa: F401  (fixtures)

NAME = "workspace-phi-3-mini"
NOW = datetime(2026, 12, 3, 14, 0, tzinfo=UTC)


def _node(name: str, price: float | None, created: str | None = "2026-12-03T12:00:00Z", ws=()):
    return Node(name, "Standard_NC6s_v3", "NVIDIA V100", 1, 1, 16, True, tuple(ws), price,
                created=created)  # fmt: skip


def _ws(count: int | None = None, workers: list[str] | None = None):
    doc = with_(INFERENCE, resource__count=count) if count else INFERENCE
    ws = api.check_dict(doc).workspace
    if workers is not None:
        from kaito_jupyter.api.model import WorkspaceStatus

        ws.status = ws.status or WorkspaceStatus()
        ws.status.worker_nodes = workers
    return ws


def test_hourly_is_the_nodes_prices_else_the_list_price_times_the_count():
    # No node yet: the SKU's list price x count (3.06 x 2).
    assert cost.workspace_hourly(_ws(count=2)) == 6.12
    # On nodes with a price: their sum, whatever the spec says.
    ws = _ws(workers=["n1"])
    assert cost.workspace_hourly(ws, [_node("n1", 2.5), _node("other", 9.0)]) == 2.5
    # A node placed by its pods counts too (status not written yet).
    placed = _node("n2", 1.0, ws=[f"default/{NAME}"])
    assert cost.workspace_hourly(_ws(), [placed]) == 1.0
    # A node of unknown price falls back to the list price.
    assert cost.workspace_hourly(ws, [_node("n1", None)]) == 3.06
    unknown = api.check_dict(with_(INFERENCE, resource__instanceType="Standard_ND96isr_H200_v5"))
    assert cost.workspace_hourly(unknown.workspace) is None


def test_so_far_counts_from_each_nodes_creation():
    ws = _ws(workers=["n1", "n2"])
    nodes = [_node("n1", 3.06), _node("n2", 3.06, created="2026-12-03T13:00:00Z")]
    assert cost.workspace_so_far(ws, nodes, NOW) == round(3.06 * 2 + 3.06 * 1, 2)
    # No node (a pool still coming up, or scaled to zero): nothing we can see billed.
    assert cost.workspace_so_far(ws, [], NOW) is None
    assert cost.workspace_so_far(ws, [_node("n1", 3.06, created=None)], NOW) is None
    line = cost.workspace_line(ws, nodes, NOW)
    assert line.startswith("$6.12/h; $9.18 so far since its nodes were created (azure eastus")
    assert "unverified" in line
    assert "no node running yet" in cost.workspace_line(ws, [], NOW)


def test_wide_table_has_cost_per_hour():
    ws = _ws(workers=["n1"])
    header, first = table.render([ws], wide=True, nodes=[_node("n1", 3.06)]).splitlines()
    assert "COST/H" in header.split()
    assert dict(zip(header.split(), first.split(), strict=False))["NAME"] == NAME
    assert table.cells(ws, nodes=[_node("n1", 3.06)])["COST/H"] == "$3.06"
    assert table.cells(_ws(count=2))["COST/H"] == "$6.12"
    assert "COST/H" not in table.render([ws]).split()  # not in the README's narrow table


def test_describe_shows_the_cost_line():
    b = MemoryBackend()
    commands.apply(yaml.safe_dump(INFERENCE), backend=b)
    b.set_status(NAME, ready(("n1",)), "2026-12-03T12:00:00Z")
    b.node_list = [_node("n1", 3.06, ws=[f"default/{NAME}"])]
    text = describe_text(commands.describe(NAME, backend=b))
    cost_line = next(line for line in text.splitlines() if line.startswith("Cost:"))
    assert "$3.06/h;" in cost_line and "so far since its nodes were created" in cost_line


def test_magic_get_wide_and_describe_show_cost(ip, backend):  # noqa: F811
    kaito(ip, "apply", yaml.safe_dump(INFERENCE))
    backend.set_status(NAME, ready(("n1",)), "2026-12-03T12:00:00Z")
    backend.node_list = [_node("n1", 3.06, ws=[f"default/{NAME}"])]
    wide = kaito(ip, "get -o wide")
    assert columns(wide._text(), NAME)[-2] == "$3.06"
    assert "$3.06" in wide._repr_mimebundle_()["text/html"]
    assert columns(kaito(ip, f"get {NAME} -o wide")._text(), NAME)[-2] == "$3.06"
    described = kaito(ip, f"describe {NAME}")._text()
    assert "$3.06/h" in described and "so far since its nodes were created" in described
