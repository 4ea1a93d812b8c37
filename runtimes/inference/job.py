"""A validated API request: what to generate, and how to answer (which API, streamed or not)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .generation import GenerationRequest


@dataclass
class Job:
    api: str  # "chat" (OpenAI chat), "completion" (OpenAI completions) or "kaito" (/chat)
    model: str  # the served model name the answer reports: the base model or an adapter
    request: GenerationRequest
    stream: bool = False
    include_usage: bool = False
    stops: list[str] = field(default_factory=list)
    prefix_text: str = ""  # text put before the generated text (echo / return_full_text)

    @property
    def prompt_tokens(self) -> int:
        return len(self.request.prompt)
