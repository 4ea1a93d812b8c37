"""Model runners: what the engine calls to run an iteration and to manage cache rows.

`DecoderRunner` is the fast path: the batched Llama-family forward over a slot cache, every
row of an iteration in one pass. Other architectures use `runtimes.inference.hf_runner`.
"""

from __future__ import annotations

import torch

from .batch import Step


class DecoderRunner:
    def __init__(self, decoder, *, max_slots: int, adapters=None, initial_capacity: int = 256):
        self.decoder = decoder
        self.adapters = adapters
        self.cache = decoder.new_cache(max_slots, initial_capacity)

    @property
    def bytes_per_position(self) -> int:
        return self.cache.bytes_per_token()

    def forward(self, step: Step, capacity: int, budget: int | None = None) -> torch.Tensor:
        self.cache.ensure(step.slots, capacity, budget)
        adapters = self.adapters if self.adapters is not None and len(self.adapters) else None
        return self.decoder.forward(step, self.cache, adapters)

    def move(self, src: int, dst: int, length: int) -> None:
        self.cache.move(src, dst, length)

    def copy_rows(self, sources: list[int], targets: list[int], length: int) -> None:
        self.cache.copy_rows(sources, targets, length)

    def idle(self) -> None:
        self.cache.release()
