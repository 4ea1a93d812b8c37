"""Conversations to token ids, with the chat template applied and the loss on assistant tokens.

The template is rendered once for the whole conversation. Each assistant reply's character span
is found by rendering the conversation up to the reply (with the generation prompt) and up to
its end: the text in between is the reply plus its end-of-turn marker, which the model must
learn to emit. Tokens whose characters start inside such a span are the targets.
"""

from __future__ import annotations

from dataclasses import dataclass

from kaito_jupyter.errors import RuntimeFailure

from .records import Conversation

# For tokenizers that ship without a chat template (tiny test tokenizers, some base models).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class Example:
    """One tokenized conversation: `targets[t]` says whether token t is trained on."""

    input_ids: list[int]
    targets: list[bool]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def target_count(self) -> int:
        return sum(self.targets[1:])  # the first token is never predicted


def prepare_tokenizer(tokenizer, chat_template: str | None = None):
    """Set the chat template (from the config, else the tokenizer's, else ChatML) and padding."""
    if chat_template:
        from pathlib import Path

        path = Path(chat_template)
        tokenizer.chat_template = path.read_text() if path.is_file() else chat_template
    elif not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "is_fast", False):
        raise RuntimeFailure(
            "the tokenizer has no fast (Rust) implementation; assistant-token masking needs offsets",
            reason="UnsupportedTokenizer",
        )
    return tokenizer


def _render(tokenizer, messages: Conversation, *, generation_prompt: bool = False) -> str:
    if not messages:
        return ""
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )


def assistant_spans(tokenizer, conversation: Conversation) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character spans of the assistant replies in it."""
    text = _render(tokenizer, conversation)
    spans = []
    cursor = 0
    for i, message in enumerate(conversation):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, conversation[:i], generation_prompt=True)
        through = _render(tokenizer, conversation[: i + 1])
        if text.startswith(through) and through.startswith(before) and len(through) > len(before):
            spans.append((len(before), len(through)))
            cursor = len(through)
            continue
        # A template that is not prefix-stable (one that dates each render, say): fall back to
        # finding the reply's text itself.
        start = text.find(message["content"], cursor)
        if start >= 0:
            end = start + len(message["content"])
            spans.append((start, end))
            cursor = end
    return text, spans


def encode(tokenizer, conversation: Conversation, max_length: int) -> Example | None:
    """Tokenize one conversation, truncated to `max_length`; None if no target survives."""
    text, spans = assistant_spans(tokenizer, conversation)
    encoded = tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, truncation=False
    )
    ids = encoded["input_ids"][:max_length]
    offsets = encoded["offset_mapping"][: len(ids)]
    targets = [any(s <= start < e for s, e in spans) for start, _ in offsets]
    if len(ids) < 2 or not any(targets[1:]):
        return None
    return Example(ids, targets)


def encode_all(
    tokenizer, conversations: list[Conversation], max_length: int
) -> tuple[list[Example], int]:
    """Every conversation that keeps at least one target token; also how many were dropped."""
    examples, dropped = [], 0
    for conversation in conversations:
        example = encode(tokenizer, conversation, max_length)
        if example is None:
            dropped += 1
        else:
            examples.append(example)
    return examples, dropped
