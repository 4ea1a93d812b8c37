"""pytest fixtures over the test bed, registered for every test by tests/conftest.py.

Each fixture starts only what it needs: `oci_registry` starts no Kubernetes, so the runtime
and registry tiers never wait for a control-plane build.

  testbed       (session) the running bed: .kubeconfig, .new_api_client(), .core(),
                .add_gpu_nodes(NodeGroup(...)), .delete_nodes(...), .wait_nodes_ready(...)
  arm           (per test) the simulated ARM on that bed: .environment(), .faults.add(...),
                .requests(...), .configure(...); faults and timings reset after each test
  oci_registry  (session) "127.0.0.1:PORT" of a real OCI registry (plain HTTP, no auth)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.testbed.bed import Testbed
from tests.testbed.processes import Supervisor
from tests.testbed.registry import allow_registry, start_registry


@pytest.fixture(scope="session")
def testbed(tmp_path_factory) -> Iterator[Testbed]:
    """A real control plane with KWOK, for the session (GPU nodes: add the ones you need)."""
    bed = Testbed(tmp_path_factory.mktemp("testbed"))
    bed.start()
    try:
        yield bed
    finally:
        bed.stop()


@pytest.fixture(scope="session")
def _arm_session(testbed):
    from tests.testbed.arm.simulator import ArmSimulator

    sim = ArmSimulator(testbed.dir / "arm", kube=testbed).start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def arm(_arm_session):
    """The simulated ARM; whatever faults or timings a test sets are undone after it."""
    _arm_session.reset()
    try:
        yield _arm_session
    finally:
        _arm_session.reset()


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory) -> Iterator[str]:
    """`host:port` of a real OCI registry (plain HTTP, no auth) on 127.0.0.1, for the session;
    allowed explicitly (allowed_private_registries), as a private registry must be."""
    supervisor = Supervisor(tmp_path_factory.mktemp("oci-registry"))
    try:
        address = start_registry(supervisor, supervisor.log_dir)
        allow_registry(address)
        yield address
    finally:
        supervisor.stop_all()
