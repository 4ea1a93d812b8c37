"""Authentication and XSRF on every endpoint, on a server that disallows unauthenticated
access; and the live feed: changes pushed over the server's event bus."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse

import pytest
from tornado.httpclient import HTTPClientError
from traitlets.config import Config

from kaito_jupyter.server.app import WORKSPACE_EVENT
from kaito_jupyter.server.handlers import routes
from tests.server.conftest import TOKEN
from tests.server.test_api import WORKSPACE

# Every route with each of its methods, concrete paths for the name patterns.
ENDPOINTS = [
    ("GET", "workspaces"),
    ("POST", "workspaces"),
    ("POST", "deploy"),
    ("GET", "workspaces/ws1"),
    ("DELETE", "workspaces/ws1"),
    ("GET", "workspaces/ws1/events"),
    ("GET", "workspaces/ws1/logs"),
    ("POST", "workspaces/ws1/chat"),
    ("GET", "nodes"),
    ("GET", "presets"),
    ("GET", "skus"),
    ("GET", "backend"),
    ("PUT", "backend"),
]


@pytest.fixture
def jp_server_config():
    return Config(
        {
            "ServerApp": {
                "jpserver_extensions": {"kaito_jupyter.server": True},
                "allow_unauthenticated_access": False,
            },
            "IdentityProvider": {"token": TOKEN},
            "KaitoExtension": {"backend_factory": "tests.server.memory:factory"},
        }
    )


def test_the_list_covers_every_route():
    patterns = {p.removeprefix("/kaito/api/") for p, _ in routes("")}
    covered = {
        re.sub(r"ws1", "(?P<name>[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?)", p) for _, p in ENDPOINTS
    }
    assert patterns == covered


async def _raw(http_server_client, jp_base_url, method, path, headers=None, body=None):
    url = jp_base_url.rstrip("/") + "/kaito/api/" + path
    if method == "DELETE":
        body = None
    elif body is None and method in ("POST", "PUT"):
        body = "{}"
    try:
        r = await http_server_client.fetch(
            url, method=method, headers=headers or {}, body=body, follow_redirects=False
        )
        return r.code, r.body, r.headers
    except HTTPClientError as exc:
        return (
            exc.code,
            exc.response.body if exc.response else b"",
            exc.response.headers if exc.response else {},
        )


async def test_every_endpoint_refuses_unauthenticated_requests(
    http_server_client, jp_base_url, memory
):
    memory.apply(
        [{"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "ws1"}}]
    )
    for method, path in ENDPOINTS:
        code, body, _ = await _raw(http_server_client, jp_base_url, method, path)
        assert code == 403, f"{method} {path} answered {code} without credentials"
        assert json.loads(body)["code"] == "forbidden", (method, path, body)
        code, _, _ = await _raw(
            http_server_client, jp_base_url, method, path, {"Authorization": "token wrong"}
        )
        assert code == 403, f"{method} {path} answered {code} with a wrong token"
    assert "ws1" in {n for _, n in memory.items}  # nothing was deleted


async def _login(http_server_client, jp_base_url) -> dict[str, str]:
    """A browser's session: the login form with the token, then the cookies it gets."""
    login = jp_base_url.rstrip("/") + "/login"
    first = await http_server_client.fetch(login)
    cookies = _cookies(first.headers)
    form = urllib.parse.urlencode({"password": TOKEN, "_xsrf": cookies["_xsrf"]})
    try:
        await http_server_client.fetch(
            login, method="POST", body=form, follow_redirects=False,
            headers={"Cookie": _header(cookies)},
        )  # fmt: skip
    except HTTPClientError as exc:  # 302 to the lab
        assert exc.code == 302, exc
        cookies.update(_cookies(exc.response.headers))
    return cookies


def _cookies(headers) -> dict[str, str]:
    out = {}
    for raw in headers.get_list("Set-Cookie"):
        name, _, rest = raw.partition("=")
        out[name] = rest.split(";", 1)[0]
    return out


def _header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


async def test_writes_with_a_session_cookie_need_the_xsrf_token(
    http_server_client, jp_base_url, memory
):
    cookies = await _login(http_server_client, jp_base_url)
    assert any(k.startswith("username-") for k in cookies), cookies
    session = {"Cookie": _header(cookies)}
    code, _, _ = await _raw(http_server_client, jp_base_url, "GET", "workspaces", session)
    assert code == 200  # reads need the session only
    body = json.dumps({"yaml": WORKSPACE})
    for method, path in [m for m in ENDPOINTS if m[0] != "GET"]:
        code, reply, _ = await _raw(http_server_client, jp_base_url, method, path, session, body)
        assert code == 403, f"{method} {path} answered {code} without the XSRF token"
        assert "xsrf" in json.loads(reply)["message"].lower()
    code, _, _ = await _raw(
        http_server_client, jp_base_url, "POST", "workspaces",
        {**session, "X-XSRFToken": cookies["_xsrf"]}, body,
    )  # fmt: skip
    assert code == 201
    assert memory.list()[0].name == "workspace-smollm2"


async def _next_kaito_event(ws, name: str, *, phase: str | None = None, kind: str | None = None):
    while True:
        message = json.loads(await asyncio.wait_for(ws.read_message(), 30))
        if message.get("schema_id") != WORKSPACE_EVENT or message.get("name") != name:
            continue
        if kind and message["type"] != kind:
            continue
        if phase and (message.get("workspace") or {}).get("phase") != phase:
            continue
        return message


async def test_changes_are_pushed_on_the_event_bus(jp_ws_fetch, jp_fetch, memory):
    ws = await jp_ws_fetch("api", "events", "subscribe")
    try:
        await jp_fetch(
            "kaito", "api", "workspaces", method="POST", body=json.dumps({"yaml": WORKSPACE})
        )
        added = await _next_kaito_event(ws, "workspace-smollm2", kind="ADDED")
        assert added["workspace"]["phase"] == "pending"
        assert added["namespace"] == "default"

        memory.set_ready("workspace-smollm2")
        ready = await _next_kaito_event(ws, "workspace-smollm2", phase="ready")
        assert ready["type"] == "MODIFIED"
        assert {c["type"] for c in ready["workspace"]["conditions"]} >= {"InferenceReady"}

        await jp_fetch("kaito", "api", "workspaces", "workspace-smollm2", method="DELETE")
        gone = await _next_kaito_event(ws, "workspace-smollm2", kind="DELETED")
        assert gone["workspace"] is None
    finally:
        ws.close()


async def test_the_extension_stops_its_threads(kaito, jp_asyncio_loop):
    threads = [t for t in (kaito._watch_thread, kaito._controller_thread) if t is not None]
    assert threads and kaito._watch_thread.is_alive()
    await kaito.stop_extension()
    assert not any(t.is_alive() for t in threads)
