"""Hourly cost of a workspace's nodes, from the SKU table's list prices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kaito_jupyter import catalog, cost


def test_every_azure_gpu_size_kaitos_readme_uses_has_a_price():
    assert cost.price_per_hour("Standard_NC6s_v3") == 3.06
    assert cost.price_per_hour("standard_nc6s_v3") == 3.06  # ARM treats sizes case-insensitively
    assert cost.price_per_hour("Standard_NC24ads_A100_v4") is not None


def test_unknown_sizes_and_unknown_prices_are_none():
    assert cost.price_per_hour("Standard_X1") is None
    assert cost.price_per_hour(None) is None
    assert cost.price_per_hour("Standard_ND96isr_H200_v5") is None  # not written down
    assert cost.hourly_cost("Standard_X1", 2) is None


def test_prices_are_positive_where_given():
    for sku in catalog.skus().values():
        assert sku.price_per_hour is None or sku.price_per_hour > 0, sku.name


def test_hourly_and_cumulative_cost():
    assert cost.hourly_cost("Standard_NC12s_v3", 2) == 12.24
    since = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    assert cost.cost_since("Standard_NC6s_v3", 1, since, since + timedelta(minutes=90)) == 4.59
    assert cost.cost_since("Standard_NC6s_v3", 1, since, since - timedelta(hours=1)) == 0.0


def test_the_basis_is_always_said():
    text = cost.describe("Standard_NC6s_v3", 2)
    assert text.startswith("$6.12/h (2 x $3.06, azure eastus list price")
    assert "unverified" in text
    assert cost.describe("Standard_X1", 1) == "no list price known for Standard_X1"


def test_describe_shows_the_nodes_hourly_cost_and_its_basis():
    from kaito_jupyter.backends.base import Node

    nodes = [
        Node("a", "Standard_NC6s_v3", "NVIDIA V100", 1, 1, price_per_hour=3.06),
        Node("b", "Standard_NC6s_v3", "NVIDIA V100", 1, 1, price_per_hour=3.06),
    ]
    text = cost.nodes_text(nodes)
    assert text.startswith("$6.12/h for 2 node(s); azure eastus list price")
    assert "unverified" in text
    assert cost.nodes_text([Node("c", None, None, 1, 0)]) is None
