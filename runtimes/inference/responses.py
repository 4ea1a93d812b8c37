"""Response bodies: OpenAI chat/completions objects and stream chunks, Kaito's {"Result"}."""

from __future__ import annotations

import json
import time
import uuid

from .generation import LENGTH

FINISH = {LENGTH: "length"}  # everything else that ends normally is "stop"


def finish_reason(reason: str | None) -> str | None:
    return None if reason is None else FINISH.get(reason, "stop")


class Responder:
    """Builds the bodies of one response (one id, one creation time)."""

    def __init__(self, job):
        self.job = job
        chat = job.api == "chat"
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"

    def usage(self, completion_tokens: int) -> dict:
        prompt = self.job.prompt_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        }

    def _envelope(self, obj: str, choices: list) -> dict:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.job.model,
            "system_fingerprint": None,
            "choices": choices,
        }

    def complete(self, text: str, reason: str | None, completion_tokens: int) -> dict:
        text = self.job.prefix_text + text
        if self.job.api == "kaito":
            return {"Result": text}
        if self.job.api == "chat":
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason(reason),
            }
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": finish_reason(reason),
            }
        body = self._envelope(self.object, [choice])
        body["usage"] = self.usage(completion_tokens)
        return body

    def chunk(self, text: str | None, reason: str | None, *, first: bool = False) -> dict:
        if self.job.api == "chat":
            delta: dict = {"role": "assistant", "content": ""} if first else {}
            if text:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "logprobs": None}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None}
            obj = "text_completion"
        choice["finish_reason"] = finish_reason(reason)
        return self._envelope(obj, [choice])

    def usage_chunk(self, completion_tokens: int) -> dict:
        obj = "chat.completion.chunk" if self.job.api == "chat" else "text_completion"
        body = self._envelope(obj, [])
        body["usage"] = self.usage(completion_tokens)
        return body


def sse(body: dict | str) -> bytes:
    data = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    return f"data: {data}\n\n".encode()
