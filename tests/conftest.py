"""Test tiers are pytest markers (registered in pyproject.toml); unmarked tests are the unit tier.

Tiers live in their own directories and every test in a tier directory gets its marker here,
so `pytest -m cluster` selects exactly the cluster tier.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Torch-based tests share a 2-core machine; one thread each keeps them predictable.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# The test bed's fixtures (testbed, arm, oci_registry), for every tier.
pytest_plugins = ["tests.testbed.fixtures"]

TIERS = ("cluster", "aks", "runtime", "registry", "server", "notebooks")
HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        rel = Path(item.fspath).resolve().relative_to(HERE.resolve())
        tier = rel.parts[0] if len(rel.parts) > 1 else None
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
