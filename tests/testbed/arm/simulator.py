"""ArmSimulator: the simulated ARM and Entra ID on one HTTPS port on loopback.

    sim = ArmSimulator(workdir, kube=testbed).start()
    sim.environment()      # the product settings that point kaito-jupyter at it
    sim.faults.add("quota_exceeded", pool="ws1")
    sim.requests("agentPools.createOrUpdate")
    sim.stop()

It serves from a background thread of the process that starts it; the certificate comes from
a throwaway trustme CA whose bundle `environment()` names.
"""

from __future__ import annotations

import secrets
import ssl
import threading
import time
import uuid
from http.server import ThreadingHTTPServer
from pathlib import Path

import trustme
from kaito_jupyter.runtimes.local_server import LOOPBACK, free_port

from tests.testbed.arm import errors
from tests.testbed.arm.agent_pools import AgentPools, ClusterIdentity, NodeSink
from tests.testbed.arm.entra import TokenIssuer
from tests.testbed.arm.faults import FaultBook
from tests.testbed.arm.request_log import RequestLog
from tests.testbed.arm.server import ArmRequestHandler, Reply, encode_kubeconfig
from tests.testbed.gpu_nodes import is_ready


class KubeNodeSink(NodeSink):
    """Creates, refreshes and deletes pool nodes in the bed, as the ARM identity."""

    def __init__(self, kubeconfig: Path):
        from kubernetes import client, config

        self._api = config.new_client_from_config(config_file=str(kubeconfig))
        self._core = client.CoreV1Api(self._api)
        self._lock = threading.Lock()

    def create(self, nodes: list[dict]) -> None:
        from kubernetes.client.exceptions import ApiException

        with self._lock:
            for node in nodes:
                try:
                    self._core.create_node(node)
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                    # A scaled or relabelled pool: bring the existing node up to date.
                    self._core.patch_node(
                        node["metadata"]["name"],
                        {
                            "metadata": {"labels": node["metadata"]["labels"]},
                            "spec": {"taints": node["spec"]["taints"]},
                        },
                    )

        self._wait_ready({node["metadata"]["name"] for node in nodes})

    def _wait_ready(self, names: set[str], timeout: float = 60) -> None:
        # AKS reports Succeeded once the VMs joined as Ready nodes; so does the simulator.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                ready = {n.metadata.name for n in self._core.list_node().items if is_ready(n)}
            if names <= ready:
                return
            time.sleep(0.2)
        raise TimeoutError(f"nodes {', '.join(sorted(names - ready))} never became Ready")

    def delete(self, names: list[str]) -> None:
        from kubernetes.client.exceptions import ApiException

        with self._lock:
            for name in names:
                try:
                    self._core.delete_node(name)
                except ApiException as exc:
                    if exc.status != 404:
                        raise

    def close(self) -> None:
        self._api.close()


class ArmSimulator:
    def __init__(
        self,
        workdir: Path,
        kube,
        *,
        subscription: str = "00000000-0000-4000-8000-00000000a1c5",
        resource_group: str = "kaito-testbed",
        cluster: str = "kaito-testbed",
        location: str = "eastus",
        tenant_id: str = "00000000-0000-4000-8000-0000000e17a1",
        client_id: str = "00000000-0000-4000-8000-00000000c11e",
        provisioning_seconds: float = 1.0,
        poll_seconds: float = 1.0,
    ):
        self.dir = workdir
        self.kube = kube
        self.identity = ClusterIdentity(subscription, resource_group, cluster, location)
        self.tokens = TokenIssuer(tenant_id, client_id, secrets.token_urlsafe(24))
        self.faults = FaultBook()
        self.log = RequestLog(workdir / "arm-requests.jsonl")
        self.provisioning_seconds = provisioning_seconds
        self.poll_seconds = poll_seconds
        self.base_url = ""
        self.audience = ""
        self.ca_bundle = workdir / "arm-ca.pem"
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._sink: KubeNodeSink | None = None
        self.pools: AgentPools | None = None

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> ArmSimulator:
        self.dir.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="kaito-jupyter simulated ARM")
        ca.cert_pem.write_to_path(str(self.ca_bundle))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert(LOOPBACK, "localhost").configure_cert(context)

        port = free_port()
        self.base_url = f"https://{LOOPBACK}:{port}"
        # The token audience is the endpoint, as for a sovereign cloud's own ARM.
        self.audience = self.base_url
        self._sink = KubeNodeSink(self.kube.dir / "arm.kubeconfig")
        self.pools = AgentPools(self.identity, self._sink, lambda: self.provisioning_seconds)
        self.pools.materialise_system_pools()

        handler = type("BoundArmRequestHandler", (ArmRequestHandler,), {"sim": self})
        server = ThreadingHTTPServer((LOOPBACK, port), handler)
        server.daemon_threads = True
        # The handshake happens in each request's own thread, not in the accept loop.
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="arm-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.pools is not None:
            self.pools.stop()
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    # -- what tests use ----------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """kaito-jupyter's settings for this ARM, as a user would set them for a sovereign cloud
        (kaito_jupyter/config.py), plus azure-identity's EnvironmentCredential variables."""
        return {
            "KAITO_PROVISIONER": "aks",
            "AZURE_SUBSCRIPTION_ID": self.identity.subscription,
            "KAITO_AKS_RESOURCE_GROUP": self.identity.resource_group,
            "KAITO_AKS_CLUSTER": self.identity.name,
            "KAITO_ARM_ENDPOINT": self.base_url,
            "KAITO_ARM_AUDIENCE": self.audience,
            "KAITO_AZURE_CA_BUNDLE": str(self.ca_bundle),
            "KAITO_AZURE_DISABLE_INSTANCE_DISCOVERY": "true",
            "AZURE_AUTHORITY_HOST": self.base_url,
            "AZURE_TENANT_ID": self.tokens.tenant_id,
            "AZURE_CLIENT_ID": self.tokens.client_id,
            "AZURE_CLIENT_SECRET": self.tokens.client_secret,
            # DefaultAzureCredential tries only the environment: no managed-identity probe.
            "AZURE_TOKEN_CREDENTIALS": "EnvironmentCredential",
            "KAITO_TESTBED_ARM_ADMIN": f"{self.base_url}/_testbed",
        }

    def requests(self, operation: str | None = None, **match) -> list[dict]:
        """Entries of arm-requests.jsonl, optionally only one operation's or matching fields."""
        return self.log.entries(operation, **match)

    def configure(
        self, provisioning_seconds: float | None = None, poll_seconds: float | None = None
    ):
        if provisioning_seconds is not None:
            self.provisioning_seconds = float(provisioning_seconds)
        if poll_seconds is not None:
            self.poll_seconds = float(poll_seconds)

    def settings(self) -> dict:
        return {
            "provisioning_seconds": self.provisioning_seconds,
            "poll_seconds": self.poll_seconds,
        }

    def reset(self) -> None:
        """Forget faults and restore default timings (between tests)."""
        self.faults.clear()
        self.configure(provisioning_seconds=1.0, poll_seconds=1.0)

    # -- ARM operations (called by the request handler) --------------------------------------

    def arm_operation(self, operation: str, params: dict, query: dict, body, entry) -> Reply:
        api_version = query["api-version"]
        if operation.startswith("operation"):
            return self._operation_status(operation, params, api_version)
        self._check_cluster(params)
        pools = self.pools
        if operation == "managedClusters.get":
            return Reply(200, self._cluster_resource())
        if operation == "managedClusters.listClusterUserCredential":
            kubeconfig = Path(self.kube.kubeconfig).read_text()
            return Reply(
                200,
                {"kubeconfigs": [{"name": "clusterUser", "value": encode_kubeconfig(kubeconfig)}]},
            )
        if operation == "agentPools.list":
            return Reply(200, {"value": pools.list()})
        name = params["pool"]
        if operation == "agentPools.get":
            return Reply(200, pools.get(name))
        if operation == "agentPools.createOrUpdate":
            return self._put_pool(name, body or {}, api_version, entry)
        if operation == "agentPools.delete":
            try:
                pools.get(name)
            except errors.ArmError:
                return Reply(204)  # deleting what is gone succeeds, as ARM's DELETE does
            slow = self.faults.take(("slow_operation",), operation, "DELETE", name)
            if slow is not None:
                entry["fault"] = slow.kind
            op = pools.delete(name, operation_seconds=slow.seconds if slow else None)
            return Reply(202, None, self._lro_headers(op.id, api_version, location=True))
        raise errors.ArmError(404, "NotFound", operation)

    def _put_pool(self, name: str, body: dict, api_version: str, entry) -> Reply:
        vm_size = (body.get("properties") or {}).get("vmSize")
        take = self.faults.take
        invalid = take(("invalid_vm_size",), "agentPools.createOrUpdate", "PUT", name, vm_size)
        if invalid is not None:
            entry["fault"] = invalid.kind
            raise errors.invalid_vm_size(name, self.identity.location)
        quota = take(("quota_exceeded",), "agentPools.createOrUpdate", "PUT", name, vm_size)
        operation_error = None
        if quota is not None:
            entry["fault"] = quota.kind
            error = self._quota_error(quota, body)
            if quota.phase == "request":
                raise error
            operation_error = error
        slow = take(("slow_operation",), "agentPools.createOrUpdate", "PUT", name, vm_size)
        if slow is not None:
            entry["fault"] = entry["fault"] or slow.kind
        pool, op, created = self.pools.create_or_update(
            name,
            body,
            operation_seconds=slow.seconds if slow else None,
            operation_error=operation_error,
        )
        headers = self._lro_headers(op.id, api_version)
        return Reply(201 if created else 200, pool, headers)

    def _quota_error(self, fault, body: dict) -> errors.ArmError:
        from tests.testbed.gpu_nodes import skus

        properties = body.get("properties") or {}
        vm_size = properties.get("vmSize") or ""
        vcpus = int(skus().get(vm_size, {}).get("vcpus", 8))
        family = _vm_family(vm_size)
        return errors.quota_exceeded(
            self.identity.name,
            self.identity.node_resource_group,
            self.identity.location,
            family,
            limit=fault.limit,
            usage=fault.usage,
            required=vcpus * int(properties.get("count", 1)),
        )

    def _operation_status(self, operation: str, params: dict, api_version: str) -> Reply:
        if params["sub"] != self.identity.subscription:
            raise errors.not_found("subscription", params["sub"])
        op = self.pools.operation(params["op"])
        retry = {"Retry-After": str(max(1, round(self.poll_seconds)))}
        if operation == "operations.get":
            headers = retry if op.status == "InProgress" else {}
            return Reply(200, op.body(self.identity.subscription, self.identity.location), headers)
        # operationresults: 202 while running, then the outcome.
        if op.status == "InProgress":
            return Reply(
                202, None, {**retry, **self._lro_headers(op.id, api_version, location=True)}
            )
        if op.status == "Failed" and op.error is not None:
            raise op.error
        if op.kind == "delete":
            return Reply(204)
        return Reply(200, self.pools.get(op.pool))

    def _lro_headers(self, operation_id: str, api_version: str, location: bool = False) -> dict:
        base = (
            f"{self.base_url}/subscriptions/{self.identity.subscription}/providers/"
            f"Microsoft.ContainerService/locations/{self.identity.location}"
        )
        headers = {
            "Azure-AsyncOperation": f"{base}/operations/{operation_id}?api-version={api_version}",
            "Retry-After": str(max(1, round(self.poll_seconds))),
        }
        if location:
            headers["Location"] = (
                f"{base}/operationresults/{operation_id}?api-version={api_version}"
            )
        return headers

    def _check_cluster(self, params: dict) -> None:
        ident = self.identity
        if params["sub"] != ident.subscription:
            raise errors.ArmError(
                404,
                "SubscriptionNotFound",
                f"The subscription '{params['sub']}' could not be found.",
            )
        if params["rg"].lower() != ident.resource_group.lower():
            raise errors.not_found("resource group", params["rg"])
        if params["cluster"].lower() != ident.name.lower():
            raise errors.ArmError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.ContainerService/managedClusters/{params['cluster']}' "
                f"under resource group '{params['rg']}' was not found.",
            )

    def _cluster_resource(self) -> dict:
        ident = self.identity
        from tests.testbed import versions

        profiles = [{"name": p["name"], **p["properties"]} for p in self.pools.list()]
        return {
            "id": ident.cluster_id(),
            "name": ident.name,
            "type": "Microsoft.ContainerService/ManagedClusters",
            "location": ident.location,
            "properties": {
                "provisioningState": "Succeeded",
                "powerState": {"code": "Running"},
                "kubernetesVersion": versions.KUBERNETES.lstrip("v"),
                "currentKubernetesVersion": versions.KUBERNETES.lstrip("v"),
                "dnsPrefix": ident.name,
                "fqdn": f"{ident.name}-{uuid.uuid5(uuid.NAMESPACE_URL, ident.cluster_id()).hex[:8]}"
                f".hcp.{ident.location}.azmk8s.io",
                "nodeResourceGroup": ident.node_resource_group,
                "agentPoolProfiles": profiles,
                "enableRBAC": True,
            },
        }


def _vm_family(vm_size: str) -> str:
    # Standard_NC24ads_A100_v4 -> standardNCADSA100v4Family, the quota name CRP reports.
    parts = vm_size.removeprefix("Standard_").split("_")
    series = "".join(c for c in parts[0] if not c.isdigit()).upper()
    rest = "".join(p.upper() if not p.startswith("v") else p for p in parts[1:])
    return f"standard{series}{rest}Family"
