"""The `nodeclaim` provisioner against the bed's real API server, with a NodeClaim CRD installed
by the test. The bed runs no Karpenter, so `launch` plays its part for a claim: a KWOK node
with the claim's labels and taints, and the claim's status as Karpenter writes it."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from kubernetes.client import ApiextensionsV1Api
from kubernetes.client.exceptions import ApiException

from kaito_jupyter.provisioners import nodeclaim, selection
from kaito_jupyter.provisioners.base import NodeRequest
from kaito_jupyter.provisioners.nodeclaim import NodeClaimProvisioner
from tests.testbed.gpu_nodes import gpu_node

SKU = "Standard_NC6s_v3"

# Enough of a NodeClaim CRD for the API server to store and serve claims with a status.
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": nodeclaim.CRD_NAME},
    "spec": {
        "group": nodeclaim.GROUP,
        "names": {
            "kind": "NodeClaim",
            "listKind": "NodeClaimList",
            "plural": "nodeclaims",
            "singular": "nodeclaim",
        },
        "scope": "Cluster",
        "versions": [
            {
                "name": nodeclaim.VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
            }
        ],
    },
}


class RestError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"{status}: {body}")
        self.status = status


class Rest:
    """The one verb the provisioner uses of the backend's Kube: request(method, path, ...)."""

    def __init__(self, api):
        self.api = api

    def request(self, method, path, *, body=None, query=None, content_type="application/json"):
        headers = {"Accept": "application/json", "Content-Type": content_type}
        params = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=[(k, v) for k, v in query or [] if v is not None],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(*params)
        except ApiException as exc:
            raise RestError(exc.status, exc.body) from None
        data = response.read()
        if not 200 <= response.status < 300:
            raise RestError(response.status, data)
        return json.loads(data) if data else {}


@pytest.fixture(scope="module")
def rest(testbed):
    api = testbed.new_api_client()
    extensions = ApiextensionsV1Api(api)
    try:
        extensions.create_custom_resource_definition(CRD)
    except ApiException as exc:
        if exc.status != 409:
            raise
    client = Rest(api)
    deadline = time.monotonic() + 30
    while not nodeclaim.served(client):
        assert time.monotonic() < deadline, "the NodeClaim CRD was never served"
        time.sleep(0.2)
    yield client
    # Other tests' controllers choose their provisioner by what the cluster serves: leave the
    # cluster without NodeClaims, as it was.
    extensions.delete_custom_resource_definition(nodeclaim.CRD_NAME)
    deadline = time.monotonic() + 30
    while nodeclaim.served(client):
        assert time.monotonic() < deadline, "the NodeClaim CRD was never removed"
        time.sleep(0.2)
    api.close()


@pytest.fixture
def list_nodes(rest):
    return lambda: rest.request("GET", "/api/v1/nodes")["items"]


def _request(name: str, count: int = 1) -> NodeRequest:
    return NodeRequest(
        namespace="default",
        name=name,
        uid=str(uuid.uuid4()),
        instance_type=SKU,
        count=count,
        labels={"apps": name},
        os_disk_gib=100,
    )


def launch(testbed, rest, claim: dict, *, fail: str | None = None) -> str | None:
    """Karpenter's part: the claim's node, then the claim's status."""
    name = claim["metadata"]["name"]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if fail:
        conditions = [
            {
                "type": "Launched",
                "status": "False",
                "reason": "LaunchFailed",
                "message": fail,
                "lastTransitionTime": now,
            }
        ]
        status = {"conditions": conditions}
        node_name = None
    else:
        node_name = f"aks-{name}-12345678-vmss000000"
        labels = dict(claim["metadata"]["labels"])
        taints = claim["spec"]["taints"]
        testbed.create_nodes([gpu_node(node_name, SKU, name, labels, taints)])
        testbed.wait_nodes_ready([node_name])
        conditions = [
            {"type": t, "status": "True", "reason": t, "message": "", "lastTransitionTime": now}
            for t in ("Launched", "Registered", "Initialized", "Ready")
        ]
        status = {"nodeName": node_name, "providerID": f"azure:///{name}", "conditions": conditions}
    rest.request(
        "PATCH",
        f"{nodeclaim.PATH}/{name}/status",
        body={"status": status},
        content_type="application/merge-patch+json",
    )
    return node_name


def _claims(rest, request):
    selector = nodeclaim.workspace_selector(request.namespace, request.name)
    return rest.request("GET", nodeclaim.PATH, query=[("labelSelector", selector)])["items"]


def test_claims_as_kaito_makes_them_become_ready_nodes_and_are_released(testbed, rest, list_nodes):
    prov = NodeClaimProvisioner(rest, list_nodes)
    request = _request("phi-claims", count=2)
    first = prov.ensure(request)
    assert first.reason == "Provisioning" and not first.satisfied
    claims = _claims(rest, request)
    assert sorted(c["metadata"]["name"] for c in claims) == sorted(
        nodeclaim.claim_name("default", "phi-claims", i) for i in range(2)
    )
    claim = claims[0]
    labels = claim["metadata"]["labels"]
    assert labels["karpenter.sh/nodepool"] == "kaito"
    assert labels["kaito.sh/workspace"] == "phi-claims"
    assert labels["kaito.sh/workspacenamespace"] == "default"
    assert labels["apps"] == "phi-claims"
    assert claim["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    spec = claim["spec"]
    assert spec["nodeClassRef"] == {
        "group": "kaito.sh",
        "kind": "KaitoNodeClass",
        "name": "default",
    }
    assert spec["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    keys = {r["key"]: r["values"] for r in spec["requirements"]}
    assert keys["node.kubernetes.io/instance-type"] == [SKU]
    assert keys["karpenter.azure.com/sku-name"] == [SKU]
    assert spec["resources"]["requests"]["storage"] == "100Gi"

    # A second reconcile (or a restarted controller) makes no more claims.
    NodeClaimProvisioner(rest, list_nodes).ensure(request)
    assert len(_claims(rest, request)) == 2

    nodes = [launch(testbed, rest, c) for c in claims]
    report = prov.ensure(request)
    assert report.satisfied and report.reason == "NodesReady"
    assert sorted(report.ready) == sorted(nodes)

    assert prov.release(request) is False  # deletes begin
    assert prov.release(request) is True
    assert _claims(rest, request) == []
    testbed.delete_nodes(nodes)  # Karpenter's finalizer would take the nodes


def test_an_instance_type_karpenter_cannot_launch_fails_with_the_reason(testbed, rest, list_nodes):
    prov = NodeClaimProvisioner(rest, list_nodes)
    request = _request("no-capacity")
    prov.ensure(request)
    [claim] = _claims(rest, request)
    launch(testbed, rest, claim, fail=f"creating instance, {nodeclaim.INSTANCE_TYPES_UNAVAILABLE}")
    report = prov.ensure(request)
    assert report.failed and report.reason == "LaunchFailed"
    assert nodeclaim.INSTANCE_TYPES_UNAVAILABLE in report.message
    assert "resource.instanceType" in report.message
    prov.release(request)


def test_orphan_claims_are_collected_and_fewer_nodes_delete_claims(testbed, rest, list_nodes):
    prov = NodeClaimProvisioner(rest, list_nodes)
    kept, orphan = _request("kept-claims", count=2), _request("orphan-claims")
    prov.ensure(kept)
    prov.ensure(orphan)
    removed = prov.collect({("default", "kept-claims")})
    assert removed == [nodeclaim.claim_name("default", "orphan-claims", 0)]
    assert _claims(rest, orphan) == []

    prov.ensure(_request("kept-claims", count=1))
    assert [c["metadata"]["name"] for c in _claims(rest, kept)] == [
        nodeclaim.claim_name("default", "kept-claims", 0)
    ]
    prov.release(kept)


def test_auto_picks_nodeclaim_where_nodeclaims_are_served(rest, tmp_path):
    from kaito_jupyter import config

    settings = config.load(path=tmp_path / "kaito.yaml", environ={})
    assert settings.provisioner == "auto"
    assert selection.choose(settings, rest) == "nodeclaim"
