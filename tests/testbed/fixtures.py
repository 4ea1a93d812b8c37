"""pytest fixtures over the test bed, registered for every test by tests/conftest.py.

Each fixture starts only what it needs: `oci_registry` starts no Kubernetes, so the runtime
and registry tiers never wait for a control-plane build.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.testbed.processes import Supervisor
from tests.testbed.registry import start_registry


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory) -> Iterator[str]:
    """`host:port` of a real OCI registry (plain HTTP, no auth) on 127.0.0.1, for the session."""
    supervisor = Supervisor(tmp_path_factory.mktemp("oci-registry"))
    try:
        yield start_registry(supervisor, supervisor.log_dir)
    finally:
        supervisor.stop_all()
