"""Kaito's POST /chat (its transformers runtime up to v0.8): body to Job.

{"prompt": str} or {"messages": [...]}, with "generate_kwargs" as transformers' generate()
takes them. Defaults are Kaito's (max_length 200, do_sample true, top_k 10, ...). The answer
is {"Result": text}: for a prompt, the prompt followed by the generated text unless
return_full_text is false (the text-generation pipeline's behaviour); for messages, the
assistant's reply. Unknown generate_kwargs are ignored, as Kaito passed them on unchecked.
"""

from __future__ import annotations

from .generation import GenerationRequest
from .job import Job
from .openai_api import chat_messages
from .sampling import SamplingParams
from .validation import ClientError, Fields

MAX_BEAMS = 8


def chat_job(body: dict, served, max_beams: int = MAX_BEAMS) -> Job:
    f = Fields(body)
    has_prompt, has_messages = body.get("prompt") is not None, body.get("messages") is not None
    if has_prompt == has_messages:
        raise ClientError(
            "send exactly one of prompt (a string) or messages (an array)", param="prompt"
        )
    g = f.object("generate_kwargs")
    prefix = ""
    if has_prompt:
        text = f.string("prompt")
        if not text:
            raise ClientError("prompt must not be empty", param="prompt")
        full = f.boolean("return_full_text", True)
        text = (f.string("prefix") or "") + text
        prompt = served.encode_text(text)
        prefix = text if full else ""
    else:
        prompt = served.encode_chat(chat_messages(body.get("messages")))

    prompt, new = _lengths(g, prompt, served.context_length, f.string("handle_long_generation"))
    min_new = g.integer("min_new_tokens", None, minimum=0)
    if min_new is None:
        min_new = max(0, g.integer("min_length", 0, minimum=0) - len(prompt))

    temperature = g.number("temperature", 1.0, minimum=0.0)
    do_sample = g.boolean("do_sample", True) and temperature > 0
    params = SamplingParams(
        do_sample=do_sample,
        temperature=temperature if temperature > 0 else 1.0,
        top_k=g.integer("top_k", 10, minimum=0),
        top_p=g.number("top_p", 1.0, above=0.0, maximum=1.0),
        typical_p=g.number("typical_p", 1.0, above=0.0, maximum=1.0),
        repetition_penalty=g.number("repetition_penalty", 1.0, above=0.0),
        min_new_tokens=min(min_new, new),
        seed=g.integer("seed", None),
    )
    beams = g.integer("num_beams", 1, minimum=1, maximum=max_beams)
    request = GenerationRequest(
        prompt=tuple(prompt),
        max_new_tokens=new,
        params=params,
        eos=_eos(g, served),
        num_beams=beams,
        length_penalty=g.number("length_penalty", 1.0),
        early_stopping=bool(g.body.get("early_stopping") is True),
    )
    return Job("kaito", served.name, request, prefix_text=prefix)


def _lengths(g: Fields, prompt: list[int], context: int, long: str | None):
    """The prompt (cut from the left under handle_long_generation="hole") and new tokens."""
    n = len(prompt)
    if g.has("max_new_tokens"):
        new = g.integer("max_new_tokens", minimum=1)
        param = "generate_kwargs.max_new_tokens"
    else:
        max_length = g.integer("max_length", 200, minimum=1)
        new = max_length - n
        param = "generate_kwargs.max_length"
        if new <= 0:
            raise ClientError(
                f"generate_kwargs.max_length ({max_length}) counts the prompt, which is {n} "
                "tokens: raise max_length or set max_new_tokens",
                param=param,
                code="invalid_value",
            )
    if new >= context:
        raise ClientError(
            f"{new} new tokens do not fit the context window of {context} tokens",
            param=param,
            code="context_length_exceeded",
        )
    if n + new > context:
        if long != "hole":
            raise ClientError(
                f"the prompt ({n} tokens) plus {new} new tokens exceeds the context window of "
                f"{context} tokens",
                param="prompt",
                code="context_length_exceeded",
            )
        prompt = prompt[-(context - new) :]
    return prompt, new


def _eos(g: Fields, served) -> frozenset[int]:
    value = g.body.get("eos_token_id")
    if value is None:
        return served.eos
    ids = value if isinstance(value, list) else [value]
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise ClientError(
            "generate_kwargs.eos_token_id must be a token id or an array of them",
            param="generate_kwargs.eos_token_id",
        )
    return frozenset(ids)
