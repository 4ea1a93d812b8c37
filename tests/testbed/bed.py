"""The whole bed: control plane, GPU nodes, and optionally the simulated ARM and a registry.

`Testbed` is what both the `run` command and the pytest fixtures drive. Start it from the
main thread (processes.py says why), use it, stop it; stopping twice is harmless.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.testbed import build
from tests.testbed.control_plane import ControlPlane, Endpoints
from tests.testbed.gpu_nodes import NodeGroup, gpu_node, is_ready
from tests.testbed.processes import Supervisor, wait_until
from tests.testbed.registry import start_registry


class Testbed:
    def __init__(
        self,
        workdir: Path,
        *,
        gpu_nodes: list[NodeGroup] = (),
        arm: bool = False,
        registry: bool = False,
        apiserver_args: list[str] = (),
        log=sys.stderr,
    ):
        self.apiserver_args = list(apiserver_args)
        self.dir = workdir
        self.gpu_groups = list(gpu_nodes)
        self.want_arm = arm
        self.want_registry = registry
        self.log = log
        self.supervisor = Supervisor(workdir / "logs")
        self.control_plane: ControlPlane | None = None
        self.endpoints: Endpoints | None = None
        self.arm = None
        self.registry: str | None = None
        self.timings: dict[str, float] = {}
        self._api_client = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> Testbed:
        started = time.monotonic()
        try:
            bin_dir = build.ensure_built(self.log)
            self.timings["build"] = round(time.monotonic() - started, 2)
            self.control_plane = ControlPlane(
                bin_dir, self.dir, self.supervisor, apiserver_args=self.apiserver_args
            )
            self.endpoints = self.control_plane.start()
            self.timings.update(self.control_plane.timings)
            # Pods can only be created once the namespace's default service account exists.
            wait_until(
                self._default_service_account_exists,
                timeout=60,
                what="the default service account (kube-controller-manager)",
                programs=list(self.control_plane.programs.values()),
            )
            for group in self.gpu_groups:
                self.add_gpu_nodes(group, wait=False)
            if self.gpu_groups:
                names = [name for group in self.gpu_groups for name in group.node_names()]
                self.wait_nodes_ready(names)
            if self.want_arm:
                from tests.testbed.arm.simulator import ArmSimulator

                self.arm = ArmSimulator(self.dir / "arm", kube=self).start()
            if self.want_registry:
                self.registry = start_registry(self.supervisor, self.dir)
            self.timings["ready"] = round(time.monotonic() - started, 2)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.arm is not None:
            self.arm.stop()
            self.arm = None
        if self._api_client is not None:
            self._api_client.close()
            self._api_client = None
        self.supervisor.stop_all()

    def __enter__(self) -> Testbed:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what a test or a command uses ----------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.endpoints.kubeconfig

    def environment(self) -> dict[str, str]:
        """The variables COMMAND runs with: the bed's kubeconfig, and the ARM's settings."""
        env = {"KUBECONFIG": str(self.kubeconfig), "KAITO_TESTBED_DIR": str(self.dir)}
        if self.arm is not None:
            env.update(self.arm.environment())
        if self.registry is not None:
            env["KAITO_TESTBED_REGISTRY"] = self.registry
        return env

    def new_api_client(self):
        """A fresh `kubernetes.client.ApiClient` logged in as the bed's admin."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    @property
    def api_client(self):
        """One shared admin ApiClient (make your own with new_api_client() for other threads)."""
        if self._api_client is None:
            self._api_client = self.new_api_client()
        return self._api_client

    def core(self):
        from kubernetes import client

        return client.CoreV1Api(self.api_client)

    def add_gpu_nodes(self, group: NodeGroup, *, wait: bool = True) -> list[str]:
        """Create the group's KWOK nodes (idempotent) and, by default, wait until Ready."""
        from kubernetes.client.exceptions import ApiException

        core = self.core()
        for node in group.nodes():
            try:
                core.create_node(node)
            except ApiException as exc:
                if exc.status != 409:
                    raise
        names = group.node_names()
        if wait:
            self.wait_nodes_ready(names)
        return names

    def create_nodes(self, nodes: list[dict]) -> None:
        """Create Node objects (made with gpu_nodes.gpu_node) that KWOK will manage."""
        from kubernetes.client.exceptions import ApiException

        core = self.core()
        for node in nodes:
            try:
                core.create_node(node)
            except ApiException as exc:
                if exc.status != 409:
                    raise

    def delete_nodes(self, names: list[str], *, wait: bool = True, timeout: float = 30) -> None:
        from kubernetes.client.exceptions import ApiException

        core = self.core()
        for name in names:
            try:
                core.delete_node(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        if wait:
            existing = set(names)
            wait_until(
                lambda: not existing & {n.metadata.name for n in core.list_node().items},
                timeout=timeout,
                what=f"deletion of nodes {', '.join(names)}",
            )

    def wait_nodes_ready(self, names: list[str], timeout: float = 60) -> None:
        core = self.core()
        wanted = set(names)

        def ready() -> bool:
            ready_names = {node.metadata.name for node in core.list_node().items if is_ready(node)}
            return wanted <= ready_names

        wait_until(
            ready,
            timeout=timeout,
            what=f"nodes {', '.join(sorted(wanted))} Ready (KWOK)",
            programs=list(self.control_plane.programs.values()),
        )

    def _default_service_account_exists(self) -> bool:
        return bool(self.core().list_namespaced_service_account("default").items)


__all__ = ["NodeGroup", "Testbed", "gpu_node"]
