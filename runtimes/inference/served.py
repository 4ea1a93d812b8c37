"""What the HTTP handlers know about the served model: its names, tokenizer, context window,
end-of-sequence tokens, generation defaults and adapters. No torch here."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .validation import ClientError

# For tokenizers without a chat template (base models): a plain transcript.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


@dataclass(frozen=True)
class Defaults:
    """Generation parameters applied when an OpenAI request leaves them out (the preset's)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int | None = None  # None: up to the context window


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    source: str
    strength: float
    index: int  # the runner's adapter id; 0 when strength is 0 (exactly the base model)


@dataclass
class Served:
    name: str
    tokenizer: object
    context_length: int
    eos: frozenset[int]
    vocab_size: int
    defaults: Defaults = Defaults()
    adapters: list[AdapterInfo] = field(default_factory=list)
    created: int = field(default_factory=lambda: int(time.time()))

    def adapter_index(self, model: str) -> int:
        """The adapter id for an OpenAI `model` value (the base model's name gives 0)."""
        if model == self.name:
            return 0
        for adapter in self.adapters:
            if adapter.name == model:
                return adapter.index
        names = ", ".join([self.name, *(a.name for a in self.adapters)])
        raise ClientError(
            f"The model `{model}` does not exist. This server serves: {names}",
            status=404,
            type="invalid_request_error",
            param="model",
            code="model_not_found",
        )

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text).input_ids)

    def encode_chat(self, messages: list[dict]) -> list[int]:
        template = None if getattr(self.tokenizer, "chat_template", None) else FALLBACK_TEMPLATE
        try:
            text = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False, chat_template=template
            )
        except Exception as exc:  # templates raise for conversations they reject
            raise ClientError(
                f"the model's chat template rejected the messages: {exc}", param="messages"
            ) from None
        # The template writes the special tokens (BOS included) itself.
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def model_cards(self) -> list[dict]:
        base = {
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": "kaito",
            "root": self.name,
            "parent": None,
            "max_model_len": self.context_length,
        }
        cards = [base]
        for adapter in self.adapters:
            cards.append(
                {
                    **base,
                    "id": adapter.name,
                    "root": adapter.source,
                    "parent": self.name,
                    "strength": adapter.strength,
                }
            )
        return cards
