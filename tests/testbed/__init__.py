"""The test bed: a real Kubernetes control plane with KWOK GPU nodes, a simulated ARM and an
OCI registry, all on loopback.

`python -m tests.testbed run -- COMMAND` from a shell; the `testbed`, `arm` and `oci_registry`
fixtures (tests/testbed/fixtures.py) from pytest. docs/testbed.md tells how to use it.
"""
