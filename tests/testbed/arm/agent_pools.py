"""One managed cluster's agent pools, with AKS's long-running-operation behaviour.

A PUT or DELETE is accepted at once (provisioningState Creating, Updating or Deleting) and
an operation is started; after the provisioning delay the pool's nodes are created, resized
or removed as KWOK GPU nodes in the bed, and the operation and the pool reach Succeeded (or
Failed, when a fault says so). Clients follow the operation through the Azure-AsyncOperation
and Location URLs, as azure-core's ARM poller does.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.testbed import gpu_nodes, versions
from tests.testbed.arm import errors

PROVIDER = "Microsoft.ContainerService"
POOL_NAME_RULE = "lowercase letters and digits, starting with a letter, at most 12 characters"
NODE_IMAGE_VERSION = "AKSUbuntu-2204gen2containerd-202611.01.0"
# The system pool every AKS cluster has: one CPU node where ordinary pods land.
SYSTEM_POOL = {
    "count": 1,
    "vmSize": gpu_nodes.SYSTEM_VM_SIZE,
    "mode": "System",
    "osType": "Linux",
    "osSKU": "Ubuntu",
    "type": "VirtualMachineScaleSets",
    "nodeLabels": {},
    "nodeTaints": [],
}


@dataclass
class Operation:
    id: str
    kind: str  # create, update, delete
    pool: str
    status: str = "InProgress"
    start_time: float = field(default_factory=time.time)
    end_time: float | None = None
    error: errors.ArmError | None = None

    def body(self, subscription: str, location: str) -> dict:
        body = {
            "id": f"/subscriptions/{subscription}/providers/{PROVIDER}/locations/{location}"
            f"/operations/{self.id}",
            "name": self.id,
            "status": self.status,
            "startTime": _iso(self.start_time),
        }
        if self.end_time is not None:
            body["endTime"] = _iso(self.end_time)
        if self.error is not None:
            body["error"] = {"code": self.error.code, "message": self.error.message}
        return body


@dataclass
class ClusterIdentity:
    subscription: str
    resource_group: str
    name: str
    location: str

    @property
    def node_resource_group(self) -> str:
        return f"MC_{self.resource_group}_{self.name}_{self.location}"

    def cluster_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/{PROVIDER}/managedClusters/{self.name}"
        )


class NodeSink:
    """Where pools' nodes go: the bed's Kubernetes (the simulator passes one in)."""

    def create(self, nodes: list[dict]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def delete(self, names: list[str]) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class AgentPools:
    def __init__(
        self,
        cluster: ClusterIdentity,
        nodes: NodeSink,
        provisioning_seconds: Callable[[], float],
    ):
        self.cluster = cluster
        self.nodes = nodes
        self.provisioning_seconds = provisioning_seconds
        self._pools: dict[str, dict] = {"nodepool1": self._resource("nodepool1", SYSTEM_POOL)}
        self._pools["nodepool1"]["properties"]["provisioningState"] = "Succeeded"
        self._operations: dict[str, Operation] = {}
        self._lock = threading.RLock()
        self._workers: list[threading.Thread] = []
        self._stopping = threading.Event()

    # -- reads -------------------------------------------------------------------------------

    def get(self, name: str) -> dict:
        with self._lock:
            pool = self._pools.get(name.lower())
            if pool is None:
                raise errors.not_found("agent pool", name, f"managed cluster '{self.cluster.name}'")
            return copy.deepcopy(pool)

    def list(self) -> list[dict]:
        with self._lock:
            return [copy.deepcopy(p) for p in self._pools.values()]

    def operation(self, operation_id: str) -> Operation:
        with self._lock:
            op = self._operations.get(operation_id)
            if op is None:
                raise errors.not_found("operation", operation_id)
            return copy.copy(op)

    # -- writes ------------------------------------------------------------------------------

    def create_or_update(
        self,
        name: str,
        body: dict,
        *,
        operation_seconds: float | None = None,
        operation_error: errors.ArmError | None = None,
    ) -> tuple[dict, Operation, bool]:
        """Validate and accept a PUT; returns (pool as accepted, operation, created?)."""
        name = name.lower()
        _validate_name(name)
        properties = dict((body or {}).get("properties") or {})
        vm_size = properties.get("vmSize")
        count = properties.get("count", 1)
        if not isinstance(count, int) or count < 0 or count > 1000:
            raise errors.bad_request(
                "InvalidParameter", f"The value of parameter count is invalid: {count!r}."
            )
        with self._lock:
            existing = self._pools.get(name)
            if existing is not None:
                state = existing["properties"].get("provisioningState")
                if state in ("Creating", "Updating", "Deleting", "Scaling"):
                    raise errors.ArmError(
                        409,
                        "OperationNotAllowed",
                        f"Operation is not allowed because there's an in progress "
                        f"{state.lower().removesuffix('ing')} operation on agent pool {name}.",
                    )
                old_size = existing["properties"].get("vmSize")
                if vm_size and old_size and vm_size != old_size:
                    raise errors.bad_request(
                        "PropertyChangeNotAllowed",
                        f"Changing property 'vmSize' is not allowed (agent pool {name}).",
                    )
                vm_size = vm_size or old_size
                properties = {**existing["properties"], **properties, "vmSize": vm_size}
            elif not vm_size:
                raise errors.bad_request(
                    "InvalidParameter", "The value of parameter vmSize is required."
                )
            if vm_size not in gpu_nodes.skus() and not _is_system(properties):
                raise errors.invalid_vm_size(name, self.cluster.location)
            created = existing is None
            pool = self._resource(name, properties)
            pool["properties"]["provisioningState"] = "Creating" if created else "Updating"
            previous_count = 0 if created else existing["properties"].get("count", 0)
            self._pools[name] = pool
            op = self._new_operation("create" if created else "update", name)
            op.error = operation_error
        seconds = self.provisioning_seconds() if operation_seconds is None else operation_seconds
        self._run(op, seconds, lambda: self._settle(name, previous_count, op))
        return copy.deepcopy(pool), copy.copy(op), created

    def delete(self, name: str, *, operation_seconds: float | None = None) -> Operation:
        name = name.lower()
        with self._lock:
            pool = self._pools.get(name)
            if pool is None:
                raise errors.not_found("agent pool", name, f"managed cluster '{self.cluster.name}'")
            if _is_system(pool["properties"]) and self._system_pool_count() == 1:
                raise errors.bad_request(
                    "OperationNotAllowed",
                    f"Cannot delete agent pool {name}: it is the cluster's last system pool.",
                )
            pool["properties"]["provisioningState"] = "Deleting"
            op = self._new_operation("delete", name)
        seconds = self.provisioning_seconds() if operation_seconds is None else operation_seconds
        self._run(op, seconds, lambda: self._remove(name))
        return copy.copy(op)

    def stop(self) -> None:
        self._stopping.set()
        for worker in self._workers:
            worker.join(timeout=10)

    # -- the operations' second half ---------------------------------------------------------

    def _run(self, op: Operation, seconds: float, finish: Callable[[], None]) -> None:
        def work():
            if self._stopping.wait(seconds):
                return
            try:
                finish()
            except Exception as exc:  # the bed refused: the operation fails as Azure's would
                with self._lock:
                    op.error = op.error or errors.ArmError(500, "InternalOperationError", str(exc))
                    self._fail(op)

        worker = threading.Thread(target=work, name=f"arm-operation-{op.id}", daemon=True)
        self._workers.append(worker)
        worker.start()

    def _settle(self, name: str, previous_count: int, op: Operation) -> None:
        with self._lock:
            pool = self._pools.get(name)
            if pool is None:
                return
            if op.error is not None:
                # A failed create leaves a Failed pool behind, as AKS does.
                self._fail(op)
                return
            properties = copy.deepcopy(pool["properties"])
        self._materialise(name, properties, previous_count)
        with self._lock:
            pool = self._pools.get(name)
            if pool is not None:
                pool["properties"]["provisioningState"] = "Succeeded"
            self._finish(op, "Succeeded")

    def _remove(self, name: str) -> None:
        with self._lock:
            pool = self._pools.get(name)
            if pool is None:
                return
            properties = copy.deepcopy(pool["properties"])
        self.nodes.delete(self._group(name, properties).node_names())
        with self._lock:
            self._pools.pop(name, None)
            for op in self._operations.values():
                if op.pool == name and op.kind == "delete" and op.status == "InProgress":
                    self._finish(op, "Succeeded")

    def materialise_system_pools(self) -> None:
        """Create the nodes of the pools that exist from the start (the system pool)."""
        for pool in self.list():
            self._materialise(pool["name"], pool["properties"], 0)

    def _materialise(self, name: str, properties: dict, previous_count: int) -> None:
        group = self._group(name, properties)
        wanted = group.node_names()
        surplus = [gpu_nodes.node_name(name, i) for i in range(len(wanted), previous_count)]
        if surplus:
            self.nodes.delete(surplus)
        if _is_system(properties):
            # System pools run on CPU VMs: no GPU labels, no GPU taint.
            nodes = []
            for index, node_name in enumerate(wanted):
                node = gpu_nodes.system_node(
                    node_name, pool=name, index=index, subscription=self.cluster.subscription
                )
                node["metadata"]["labels"].update(group.labels)
                node["spec"]["taints"] = group.taints
                nodes.append(node)
        else:
            nodes = group.nodes(self.cluster.subscription)
        # create() also refreshes labels and taints of nodes that already exist.
        self.nodes.create(nodes)

    def _group(self, name: str, properties: dict) -> gpu_nodes.NodeGroup:
        labels = dict(properties.get("nodeLabels") or {})
        labels["kubernetes.azure.com/cluster"] = self.cluster.node_resource_group
        labels["kubernetes.azure.com/mode"] = (properties.get("mode") or "User").lower()
        labels["kubernetes.azure.com/node-image-version"] = NODE_IMAGE_VERSION
        return gpu_nodes.NodeGroup(
            instance_type=properties["vmSize"],
            count=int(properties.get("count", 1)),
            pool=name,
            labels=labels,
            taints=[_parse_taint(t) for t in properties.get("nodeTaints") or []],
        )

    def _fail(self, op: Operation) -> None:
        pool = self._pools.get(op.pool)
        if pool is not None:
            pool["properties"]["provisioningState"] = "Failed"
        self._finish(op, "Failed")

    def _finish(self, op: Operation, status: str) -> None:
        op.status = status
        op.end_time = time.time()

    def _new_operation(self, kind: str, pool: str) -> Operation:
        op = Operation(id=str(uuid.uuid4()), kind=kind, pool=pool)
        self._operations[op.id] = op
        return op

    def _system_pool_count(self) -> int:
        return sum(1 for p in self._pools.values() if _is_system(p["properties"]))

    def _resource(self, name: str, properties: dict) -> dict:
        props = copy.deepcopy(properties)
        kube_version = versions.KUBERNETES.lstrip("v")
        defaults = {
            "count": 1,
            "osType": "Linux",
            "osSKU": "Ubuntu",
            "mode": "User",
            "type": "VirtualMachineScaleSets",
            "maxPods": gpu_nodes.MAX_PODS,
            "osDiskSizeGB": 128,
            "enableAutoScaling": False,
            "orchestratorVersion": kube_version,
        }
        for key, value in defaults.items():
            props.setdefault(key, value)
        props["currentOrchestratorVersion"] = props["orchestratorVersion"]
        props["nodeImageVersion"] = NODE_IMAGE_VERSION
        props["powerState"] = {"code": "Running"}
        return {
            "id": f"{self.cluster.cluster_id()}/agentPools/{name}",
            "name": name,
            "type": f"{PROVIDER}/managedClusters/agentPools",
            "properties": props,
        }


def _validate_name(name: str) -> None:
    if not (name[:1].isalpha() and name.isalnum() and name.isascii() and len(name) <= 12):
        raise errors.bad_request(
            "InvalidParameter",
            f"The agent pool name '{name}' is invalid: use {POOL_NAME_RULE}.",
        )


def _is_system(properties: dict) -> bool:
    return (properties.get("mode") or "User").lower() == "system"


def _parse_taint(taint: str) -> dict:
    # AKS writes taints as key=value:Effect.
    key_value, _, effect = taint.partition(":")
    key, _, value = key_value.partition("=")
    parsed = {"key": key, "effect": effect or "NoSchedule"}
    if value:
        parsed["value"] = value
    return parsed


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + "Z"
