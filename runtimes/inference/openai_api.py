"""OpenAI request validation: /v1/chat/completions and /v1/completions bodies to Jobs.

Only text generation with n=1 is served; parameters that would silently change meaning
(n > 1, logprobs, best_of, suffix, tools) are refused with a 400 rather than ignored.
"""

from __future__ import annotations

from .generation import GenerationRequest
from .job import Job
from .sampling import SamplingParams
from .validation import ClientError, Fields

ROLES = {"system", "user", "assistant", "tool", "developer", "function"}
# OpenAI's legacy completions endpoint defaults to 16 new tokens.
COMPLETIONS_MAX_TOKENS = 16


def chat_messages(value, param: str = "messages") -> list[dict]:
    """Validated chat messages, as {"role", "content"} dicts with text content."""
    if not isinstance(value, list) or not value:
        raise ClientError(f"{param} must be a non-empty array of messages", param=param)
    out = []
    for i, message in enumerate(value):
        where = f"{param}[{i}]"
        if not isinstance(message, dict):
            raise ClientError(f"{where} must be an object with role and content", param=where)
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise ClientError(
                f"{where}.role must be one of {', '.join(sorted(ROLES))}", param=f"{where}.role"
            )
        out.append(
            {"role": "system" if role == "developer" else role, "content": _text(message, where)}
        )
    return out


def _text(message: dict, where: str) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text"):
                raise ClientError(
                    f"{where}.content[{j}]: only text parts are supported",
                    param=f"{where}.content",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise ClientError(
                    f"{where}.content[{j}].text must be a string", param=f"{where}.content"
                )
            parts.append(text)
        return "".join(parts)
    raise ClientError(
        f"{where}.content must be a string or an array of text parts", param=f"{where}.content"
    )


def _refuse_unsupported(f: Fields, chat: bool) -> None:
    n = f.integer("n", 1, minimum=1)
    if n != 1:
        raise ClientError("only n=1 is supported", param="n", code="unsupported_value")
    if chat:
        if f.boolean("logprobs", False):
            raise ClientError("logprobs are not supported", param="logprobs")
        if f.body.get("tools"):
            raise ClientError("tools are not supported", param="tools")
    else:
        if f.body.get("logprobs") is not None and f.body.get("logprobs") != 0:
            raise ClientError("logprobs are not supported", param="logprobs")
        if f.integer("best_of", 1, minimum=1) != 1:
            raise ClientError("only best_of=1 is supported", param="best_of")
        if f.body.get("suffix"):
            raise ClientError("suffix is not supported", param="suffix")


def sampling(f: Fields, served) -> SamplingParams:
    defaults = served.defaults
    temperature = f.number("temperature", defaults.temperature, minimum=0.0, maximum=2.0)
    top_p = f.number("top_p", defaults.top_p, above=0.0, maximum=1.0)
    # Extensions other OpenAI-compatible servers accept.
    top_k = f.integer("top_k", 0, minimum=-1)
    repetition = f.number("repetition_penalty", 1.0, above=0.0)
    min_tokens = f.integer("min_tokens", 0, minimum=0)
    for key in ("presence_penalty", "frequency_penalty"):
        f.number(key, 0.0, minimum=-2.0, maximum=2.0)
    seed = f.integer("seed", None)
    return SamplingParams(
        do_sample=temperature > 0,
        temperature=temperature,
        top_k=max(top_k, 0),
        top_p=top_p,
        repetition_penalty=repetition,
        min_new_tokens=min_tokens,
        seed=seed,
    )


def max_new_tokens(f: Fields, served, prompt_tokens: int, default: int | None) -> int:
    """max_tokens (or max_completion_tokens), checked against the context window."""
    context = served.context_length
    room = context - prompt_tokens
    if room <= 0:
        raise ClientError(
            f"This model's maximum context length is {context} tokens, and the prompt is "
            f"{prompt_tokens} tokens. Shorten the prompt.",
            param="messages" if f.has("messages") else "prompt",
            code="context_length_exceeded",
        )
    key = "max_completion_tokens" if f.has("max_completion_tokens") else "max_tokens"
    requested = f.integer(key, None, minimum=1)
    if requested is None:
        return max(1, min(default or room, room))
    if requested > room:
        raise ClientError(
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt_tokens + requested} tokens ({prompt_tokens} in the prompt, {requested} "
            f"for the completion). Reduce the prompt or {key}.",
            param=key,
            code="context_length_exceeded",
        )
    return requested


def _stream(f: Fields) -> tuple[bool, bool]:
    stream = f.boolean("stream", False)
    usage = f.object("stream_options").boolean("include_usage", False)
    return stream, bool(usage)


def chat_job(body: dict, served) -> Job:
    f = Fields(body)
    name = f.string("model", served.name)
    adapter = served.adapter_index(name)
    messages = chat_messages(body.get("messages"))
    _refuse_unsupported(f, chat=True)
    params = sampling(f, served)
    stops = f.stop()
    stream, include_usage = _stream(f)
    prompt = served.encode_chat(messages)
    new = max_new_tokens(f, served, len(prompt), served.defaults.max_new_tokens)
    request = GenerationRequest(
        prompt=tuple(prompt), max_new_tokens=new, params=params, eos=served.eos, adapter=adapter
    )
    return Job("chat", name, request, stream, include_usage, stops)


def completion_job(body: dict, served) -> Job:
    f = Fields(body)
    name = f.string("model", served.name)
    adapter = served.adapter_index(name)
    prompt = _completion_prompt(body.get("prompt"), served)
    _refuse_unsupported(f, chat=False)
    params = sampling(f, served)
    stops = f.stop()
    stream, include_usage = _stream(f)
    echo = f.boolean("echo", False)
    new = max_new_tokens(f, served, len(prompt), COMPLETIONS_MAX_TOKENS)
    request = GenerationRequest(
        prompt=tuple(prompt), max_new_tokens=new, params=params, eos=served.eos, adapter=adapter
    )
    prefix = served.decode(prompt) if echo else ""
    return Job("completion", name, request, stream, include_usage, stops, prefix)


def _completion_prompt(value, served) -> list[int]:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str | list):
        value = value[0]  # one prompt in an array
    if isinstance(value, str):
        if not value:
            raise ClientError("prompt must not be empty", param="prompt")
        return served.encode_text(value)
    if (
        isinstance(value, list)
        and value
        and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    ):
        if any(t < 0 or t >= served.vocab_size for t in value):
            raise ClientError(
                f"prompt token ids must lie in [0, {served.vocab_size})", param="prompt"
            )
        return list(value)
    if isinstance(value, list) and len(value) > 1:
        raise ClientError("only one prompt per request is supported", param="prompt")
    raise ClientError(
        "prompt must be a string, or an array of token ids", param="prompt", code="invalid_type"
    )
