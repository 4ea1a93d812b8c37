"""The server extension on the kubernetes backend, against the test bed's real kube-apiserver
(KWOK GPU nodes): apply, list, get, nodes, delete and the pushed events ride the real API and
its watch. The server reconciles nothing here (`reconcile = False`); the workspace controller
itself is the cluster tier's."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from tornado.httpclient import HTTPClientError
from traitlets.config import Config

from kaito_jupyter.backends.kubernetes.install import install
from kaito_jupyter.backends.kubernetes.kube import NAMESPACE, Kube
from kaito_jupyter.server.app import WORKSPACE_EVENT
from tests.server.conftest import TOKEN
from tests.testbed.gpu_nodes import NodeGroup

SKU = "Standard_NC24ads_A100_v4"


@pytest.fixture
def namespace(testbed) -> str:
    kube = Kube(str(testbed.kubeconfig))
    try:
        install(kube)
        name = f"ui-{uuid.uuid4().hex[:8]}"
        kube.create(
            NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )
        yield name
    finally:
        kube.close()


@pytest.fixture
def jp_server_config(testbed, namespace):
    return Config(
        {
            "ServerApp": {"jpserver_extensions": {"kaito_jupyter.server": True}},
            "IdentityProvider": {"token": TOKEN},
            "KaitoExtension": {
                "backend": "kubernetes",
                "kubeconfig": str(testbed.kubeconfig),
                "namespace": namespace,
                "reconcile": False,
            },
        }
    )


def workspace(name: str) -> str:
    return f"""\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: {name}
resource:
  instanceType: {SKU}
  labelSelector:
    matchLabels:
      apps: {name}
inference:
  preset:
    name: phi-3-mini-4k-instruct
"""


async def _event(ws, name: str, predicate):
    while True:
        message = json.loads(await asyncio.wait_for(ws.read_message(), 60))
        mine = message.get("schema_id") == WORKSPACE_EVENT and message["name"] == name
        if mine and predicate(message):
            return message


async def test_workspaces_through_a_real_api_server(
    jp_fetch, jp_ws_fetch, kaito, namespace, testbed
):
    info = json.loads((await jp_fetch("kaito", "api", "backend")).body)
    assert info["backend"] == "kubernetes" and info["namespace"] == namespace

    [node] = testbed.add_gpu_nodes(NodeGroup(SKU, 1, pool=f"p{namespace[-6:]}"))
    nodes = json.loads((await jp_fetch("kaito", "api", "nodes")).body)["items"]
    mine = next(n for n in nodes if n["name"] == node)
    assert (mine["instanceType"], mine["gpus"]) == (SKU, 1)
    assert "A100" in mine["gpuModel"]

    events = await jp_ws_fetch("api", "events", "subscribe")
    try:
        body = json.dumps({"yaml": workspace("phi-ui")})
        created = await jp_fetch("kaito", "api", "workspaces", method="POST", body=body)
        assert created.code == 201
        assert json.loads(created.body)["items"][0]["namespace"] == namespace
        added = await _event(events, "phi-ui", lambda m: m["type"] == "ADDED")
        assert added["namespace"] == namespace
        assert added["workspace"]["instanceType"] == SKU

        listed = json.loads((await jp_fetch("kaito", "api", "workspaces")).body)["items"]
        assert [w["name"] for w in listed] == ["phi-ui"]
        detail = json.loads((await jp_fetch("kaito", "api", "workspaces", "phi-ui")).body)
        assert "phi-3-mini-4k-instruct" in detail["yaml"]

        with pytest.raises(HTTPClientError) as refused:
            bad = json.dumps({"yaml": workspace("phi-ui").replace(SKU, "Standard_NC6s_v3")})
            await jp_fetch("kaito", "api", "workspaces", method="POST", body=bad)
        assert refused.value.code == 422  # instanceType is immutable: Kaito's rule, kept

        gone = await jp_fetch("kaito", "api", "workspaces", "phi-ui", method="DELETE")
        assert gone.code == 202
        # No controller here to remove the finalizer: the workspace shows as deleting.
        deleting = await _event(
            events, "phi-ui",
            lambda m: m["type"] == "DELETED" or (m["workspace"] or {}).get("phase") == "deleting",
        )  # fmt: skip
        assert deleting
    finally:
        events.close()
