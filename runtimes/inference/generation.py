"""A generation request as the engine sees it, and the state of one running sequence."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .sampling import Sampler, SamplingParams

# Why a sequence ended: the OpenAI finish_reason values, plus the engine's own.
STOP = "stop"  # an end-of-sequence token or a stop string
LENGTH = "length"  # max_tokens or the context window
CANCELLED = "cancelled"  # the client went away
SHUTDOWN = "shutdown"  # the server stopped before it finished
ERROR = "error"


@dataclass(frozen=True)
class GenerationRequest:
    prompt: tuple[int, ...]
    max_new_tokens: int
    params: SamplingParams = field(default_factory=SamplingParams)
    eos: frozenset[int] = frozenset()
    adapter: int = 0  # 0: the base model; i: the runner's i-th adapter
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool = False


# sink(sequence, new tokens (end-of-sequence token excluded), finish reason or None).
# Called on the engine thread: it must hand work off, not do it.
Sink = Callable[["Sequence", list[int], "str | None"], None]


@dataclass(eq=False)
class Sequence:
    request: GenerationRequest
    sink: Sink
    generated: list[int] = field(default_factory=list)
    cached: int = 0  # positions of prompt + generated held in the KV cache
    slot: int | None = None
    cancel_reason: str | None = None
    finish_reason: str | None = None
    error: str | None = None
    submitted_at: float = field(default_factory=time.monotonic)
    sampler: Sampler | None = None
    beam: object | None = None  # a beam.BeamSearch when num_beams > 1

    def __post_init__(self) -> None:
        if self.sampler is None:
            self.sampler = Sampler(self.request.params, self.request.eos)

    @property
    def tokens(self) -> list[int]:
        return [*self.request.prompt, *self.generated]

    @property
    def length(self) -> int:
        return len(self.request.prompt) + len(self.generated)

    @property
    def pending(self) -> int:
        """Tokens not yet in the cache (1 while decoding; the prompt's rest while prefilling)."""
        return self.length - self.cached

    @property
    def done(self) -> bool:
        return self.finish_reason is not None
