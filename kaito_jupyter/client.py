"""HTTP clients for a workspace's inference server: OpenAI chat (streamed) and Kaito's /chat.

Standard library only (the notebook side stays light). An `Endpoint` says where the server is:
directly (local backend, a routable Service) or through the Kubernetes API server's service
proxy, with its credentials and CA; this module does not care which.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kaito_jupyter.backends.base import Endpoint
from kaito_jupyter.errors import KaitoError


class ChatError(KaitoError):
    """The inference server refused or failed a request."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.status = status


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Reply:
    """A finished answer: the text, why it stopped, token counts."""

    text: str
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)


def _connection(endpoint: Endpoint, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    url = urllib.parse.urlsplit(endpoint.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ChatError(f"endpoint {endpoint.url!r} is not an http(s) URL")
    if url.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            url.hostname, url.port, timeout=timeout, context=endpoint.ssl_context
        )
    else:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    return conn, url.path.rstrip("/")


def _post(endpoint: Endpoint, path: str, body: dict[str, Any], timeout: float):
    conn, base = _connection(endpoint, timeout)
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    headers.update(endpoint.headers)
    try:
        conn.request("POST", base + path, body=json.dumps(body).encode(), headers=headers)
        response = conn.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        raise ChatError(
            f"cannot reach the inference server at {endpoint.url}: {exc}",
            hint="is the workspace InferenceReady? `kaito get` shows it",
        ) from None
    if response.status >= 400:
        raw = response.read(64 << 10).decode("utf-8", "replace")
        conn.close()
        raise ChatError(_error_message(response.status, raw), status=response.status)
    return conn, response


def _error_message(status: int, raw: str) -> str:
    try:
        data = json.loads(raw)
        err = data.get("error", data)
        detail = err.get("message") if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        detail = raw.strip()[:500]
    return f"the inference server answered {status}: {detail or 'no detail'}"


def chat_request(
    messages: list[dict[str, str]],
    *,
    model: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    stream: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of an OpenAI chat completion request."""
    body: dict[str, Any] = {"messages": messages, "stream": stream}
    if model:
        body["model"] = model
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if temperature is not None:
        body["temperature"] = temperature
    if stream:
        body["stream_options"] = {"include_usage": True}
    body.update(extra or {})
    return body


def stream_chat(
    endpoint: Endpoint, body: dict[str, Any], *, timeout: float = 600.0, reply: Reply | None = None
) -> Iterator[str]:
    """Yield the answer's text pieces as the server streams them (server-sent events).

    `reply`, when given, is filled in as the stream goes: the whole text, finish reason, usage.
    """
    reply = reply if reply is not None else Reply(text="")
    conn, response = _post(endpoint, "/v1/chat/completions", {**body, "stream": True}, timeout)
    try:
        for raw in response:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                chunk = json.loads(data)
            except ValueError:
                continue
            if "error" in chunk:
                raise ChatError(_error_message(500, data))
            if chunk.get("usage"):
                reply.usage = Usage(
                    chunk["usage"].get("prompt_tokens", 0),
                    chunk["usage"].get("completion_tokens", 0),
                )
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content") or ""
                if choice.get("finish_reason"):
                    reply.finish_reason = choice["finish_reason"]
                if piece:
                    reply.text += piece
                    yield piece
    except (OSError, http.client.HTTPException) as exc:
        raise ChatError(f"the stream from {endpoint.url} broke: {exc}") from None
    finally:
        conn.close()


def complete_chat(endpoint: Endpoint, body: dict[str, Any], *, timeout: float = 600.0) -> Reply:
    """One non-streamed chat completion."""
    conn, response = _post(endpoint, "/v1/chat/completions", {**body, "stream": False}, timeout)
    try:
        data = json.loads(response.read())
    finally:
        conn.close()
    choice = (data.get("choices") or [{}])[0]
    usage = data.get("usage") or {}
    return Reply(
        text=(choice.get("message") or {}).get("content") or "",
        finish_reason=choice.get("finish_reason"),
        usage=Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)),
    )


def kaito_chat(
    endpoint: Endpoint,
    prompt: str,
    generate_kwargs: dict[str, Any] | None = None,
    *,
    timeout: float = 600.0,
) -> str:
    """Kaito's own API: POST /chat {"prompt", "generate_kwargs"} -> {"Result": ...}."""
    body: dict[str, Any] = {"prompt": prompt}
    if generate_kwargs:
        body["generate_kwargs"] = generate_kwargs
    conn, response = _post(endpoint, "/chat", body, timeout)
    try:
        return str(json.loads(response.read()).get("Result", ""))
    finally:
        conn.close()
