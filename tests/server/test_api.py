"""Every endpoint under /kaito/api/ through a real Jupyter server: payloads, errors, events."""

from __future__ import annotations

import asyncio
import json

import pytest
from tornado.httpclient import HTTPClientError

from kaito_jupyter import config
from kaito_jupyter.server import wire

WORKSPACE = """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: workspace-smollm2
inference:
  preset:
    name: smollm2-135m-instruct
"""


async def call(jp_fetch, *path, method="GET", body=None, **kw):
    """(status, JSON) of a request, errors included."""
    if body is not None:
        kw["body"] = json.dumps(body)
    try:
        response = await jp_fetch("kaito", "api", *path, method=method, **kw)
    except HTTPClientError as exc:
        return exc.code, json.loads(exc.response.body)
    return response.code, json.loads(response.body or b"null")


async def test_apply_list_get_delete(jp_fetch, memory):
    status, body = await call(jp_fetch, "workspaces", method="POST", body={"yaml": WORKSPACE})
    assert status == 201, body
    assert wire.AppliedList.model_validate(body).items[0].action == "created"
    assert memory.controller_calls >= 1  # apply made sure a reconciler runs

    status, body = await call(jp_fetch, "workspaces")
    assert status == 200
    (row,) = wire.WorkspaceList.model_validate(body).items
    assert (row.name, row.phase, row.preset) == (
        "workspace-smollm2",
        "pending",
        "smollm2-135m-instruct",
    )
    assert row.snippet.startswith("%%kaito chat workspace-smollm2")

    memory.endpoint_url = "http://127.0.0.1:9"
    memory.set_ready("workspace-smollm2")
    status, body = await call(jp_fetch, "workspaces", "workspace-smollm2")
    assert status == 200
    detail = wire.WorkspaceDetail.model_validate(body)
    assert detail.summary.phase == "ready"
    assert detail.summary.endpoint == "http://127.0.0.1:9"
    assert detail.summary.costPerHour == 3.67  # its node's list price
    assert {c.type for c in detail.summary.conditions} >= {"ResourceReady", "InferenceReady"}
    assert "smollm2-135m-instruct" in detail.yaml and "status" not in detail.yaml
    assert detail.events[0].reason == "Applied"

    status, body = await call(jp_fetch, "workspaces", "workspace-smollm2", method="DELETE")
    assert status == 202 and body["name"] == "workspace-smollm2"
    status, body = await call(jp_fetch, "workspaces", "workspace-smollm2")
    assert status == 404
    assert body["code"] == "not_found" and "workspace-smollm2" in body["message"]


async def test_invalid_yaml_is_422_with_every_issue(jp_fetch, memory):
    bad = WORKSPACE.replace("smollm2-135m-instruct", "no-such-model") + "resource:\n  count: '2'\n"
    status, body = await call(jp_fetch, "workspaces", method="POST", body={"yaml": bad})
    assert status == 422
    assert body["code"] == "invalid"
    assert len(body["issues"]) >= 2, body
    assert any("no-such-model" in i for i in body["issues"])
    assert memory.items == {}  # nothing half-created


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"yaml": WORKSPACE, "extra": 1}, "extra"),
        ({"yaml": 5}, "yaml"),
        ({}, "yaml"),
    ],
)
async def test_bad_request_bodies_name_the_field(jp_fetch, memory, body, field):
    status, reply = await call(jp_fetch, "workspaces", method="POST", body=body)
    assert status == 400 and reply["code"] == "bad_request"
    assert field in reply["message"]


async def test_body_that_is_not_json(jp_fetch, memory):
    try:
        await jp_fetch("kaito", "api", "workspaces", method="POST", body="{nope")
    except HTTPClientError as exc:
        assert exc.code == 400
        assert json.loads(exc.response.body)["code"] == "bad_request"
    else:
        pytest.fail("a body that is not JSON was accepted")


async def test_deploy_a_preset(jp_fetch, memory):
    status, body = await call(
        jp_fetch, "deploy", method="POST", body={"preset": "smollm2-135m-instruct"}
    )
    assert status == 201, body
    assert body["items"][0]["name"] == "workspace-smollm2-135m-instruct"
    stored = memory.get("workspace-smollm2-135m-instruct")
    assert stored.workspace.preset_name == "smollm2-135m-instruct"

    status, body = await call(jp_fetch, "deploy", method="POST", body={"preset": "gpt-17"})
    assert status == 409 and body["code"] == "rejected" and "gpt-17" in body["message"]


async def test_presets_skus_nodes(jp_fetch, memory):
    status, body = await call(jp_fetch, "presets")
    assert status == 200
    presets = {p.name: p for p in wire.PresetList.model_validate(body).items}
    phi = presets["llama-3.1-8b-instruct"]
    status, body = await call(jp_fetch, "skus")
    skus = {s.name: s for s in wire.SkuList.model_validate(body).items}
    assert phi.fits and set(phi.fits) <= set(skus)
    # Every SKU that fits has the GPU memory the preset needs; a smaller one is left out.
    assert all(skus[s].gpus * skus[s].gpuMemoryGib >= phi.gpuMemoryGib for s in phi.fits)
    assert any(s.gpus * s.gpuMemoryGib < phi.gpuMemoryGib for s in skus.values())
    assert presets["smollm2-135m-instruct"].cpu

    status, body = await call(jp_fetch, "skus", params={"cloud": "aws"})
    assert status == 200 and {s["cloud"] for s in body["items"]} == {"aws"}
    status, body = await call(jp_fetch, "skus", params={"cloud": "mars"})
    assert status == 400 and "cloud" in body["message"]

    status, body = await call(jp_fetch, "nodes")
    (node,) = wire.NodeList.model_validate(body).items
    assert (node.gpuModel, node.gpus, node.pricePerHour) == ("A100", 1, 3.67)


async def test_events_and_logs(jp_fetch, memory):
    await call(jp_fetch, "workspaces", method="POST", body={"yaml": WORKSPACE})
    status, body = await call(jp_fetch, "workspaces", "workspace-smollm2", "events")
    assert status == 200 and body["items"][0]["object"] == "Workspace/workspace-smollm2"

    memory.log_lines[:] = ["loading weights", "serving on 127.0.0.1:5000"]
    response = await jp_fetch(
        "kaito", "api", "workspaces", "workspace-smollm2", "logs", params={"tail": "1"}
    )
    assert response.headers["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(x) for x in response.body.decode().splitlines()]
    assert lines == [{"line": "serving on 127.0.0.1:5000", "error": None}]

    status, body = await call(jp_fetch, "workspaces", "nope", "logs")
    assert status == 404 and body["code"] == "not_found"
    status, body = await call(
        jp_fetch, "workspaces", "workspace-smollm2", "logs", params={"tail": "x"}
    )
    assert status == 400


async def test_a_followed_log_stream_ends_when_the_client_leaves(jp_fetch, memory):
    await call(jp_fetch, "workspaces", method="POST", body={"yaml": WORKSPACE})
    memory.log_lines[:] = ["first"]
    seen = []
    with pytest.raises(HTTPClientError):  # the client gives up: its connection closes
        await jp_fetch(
            "kaito", "api", "workspaces", "workspace-smollm2", "logs",
            params={"follow": "true"}, streaming_callback=seen.append, request_timeout=3,
        )  # fmt: skip
    assert b"first" in b"".join(seen)
    for _ in range(600):
        if memory.log_stops and memory.log_stops[0].is_set():
            break
        await asyncio.sleep(0.05)
    assert memory.log_stops[0].is_set(), "the server kept following logs nobody reads"


async def test_chat_streams_from_the_workspace(jp_fetch, memory, smollm2_url):
    await call(jp_fetch, "workspaces", method="POST", body={"yaml": WORKSPACE})
    status, body = await call(
        jp_fetch, "workspaces", "workspace-smollm2", "chat", method="POST",
        body={"messages": [{"role": "user", "content": "Hi"}]},
    )  # fmt: skip
    assert status == 409 and "not ready" in body["message"]

    memory.endpoint_url = smollm2_url
    memory.set_ready("workspace-smollm2")
    chunks = []
    response = await jp_fetch(
        "kaito", "api", "workspaces", "workspace-smollm2", "chat", method="POST",
        body=json.dumps({"messages": [{"role": "user", "content": "What is the capital of France?"}],
                         "maxTokens": 12, "temperature": 0}),
        streaming_callback=lambda data: chunks.append(data),
    )  # fmt: skip
    assert response.code == 200
    lines = [wire.ChatChunk.model_validate_json(x) for x in b"".join(chunks).splitlines()]
    assert lines[-1].done and lines[-1].finishReason in ("stop", "length")
    assert len([x for x in lines if x.delta]) > 1, "the answer came in one piece, not streamed"
    assert "".join(x.delta for x in lines).strip()


async def test_backend_indicator_and_switch(jp_fetch, kaito):
    status, body = await call(jp_fetch, "backend")
    info = wire.BackendInfo.model_validate(body)
    assert (info.backend, info.target, info.reconcile) == ("local", "local (memory)", True)

    status, body = await call(
        jp_fetch, "backend", method="PUT", body={"backend": "local", "namespace": "ml"}
    )
    assert status == 200 and body["namespace"] == "ml"
    status, body = await call(jp_fetch, "backend", method="PUT", body={"backend": "mars"})
    assert status == 400 and "backend" in body["message"]

    # A backend that cannot be opened changes nothing: not this server, not kaito.yaml.
    before = config.config_path().read_text()
    status, body = await call(jp_fetch, "backend", method="PUT", body={"backend": "kubernetes"})
    assert status == 502 and "kubeconfig" in body["message"]
    assert config.config_path().read_text() == before
    status, body = await call(jp_fetch, "backend")
    assert (body["backend"], body["namespace"]) == ("local", "ml")
