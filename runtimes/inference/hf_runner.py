"""The runner for architectures the batched decoder does not cover (Falcon, Gemma, gpt-oss...):
the transformers model itself, one sequence per forward pass with its own cache.

Sequences still join and leave at every iteration, stream, and are cancelled like any other;
what is lost is the shared matrix products of a batched step. Correct for any causal LM that
transformers can run with a cache.
"""

from __future__ import annotations

import copy

import torch

from .batch import Step


class HFRunner:
    def __init__(self, model, adapters=None):
        self.model = model
        self.adapters = adapters
        self.caches: dict[int, object] = {}
        config = model.config
        text = getattr(config, "get_text_config", lambda: config)()
        heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        itemsize = torch.empty((), dtype=model.dtype).element_size()
        self.bytes_per_position = 2 * text.num_hidden_layers * heads * head_dim * itemsize
        self.device = next(model.parameters()).device

    @torch.inference_mode()
    def forward(self, step: Step, capacity: int, budget: int | None = None) -> torch.Tensor:
        from transformers import DynamicCache

        logits = []
        for row in step.rows:
            cache = self.caches.get(row.slot) if row.start else None
            if cache is None:
                cache = DynamicCache(config=self.model.config)
            if self.adapters is not None:
                self.adapters.active = row.adapter
            ids = torch.tensor([row.tokens], device=self.device)
            positions = torch.arange(row.start, row.end, device=self.device)[None]
            out = self.model(
                input_ids=ids,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            self.caches[row.slot] = out.past_key_values
            if row.sample:
                logits.append(out.logits[0, -1].float())
        if self.adapters is not None:
            self.adapters.active = 0
        return torch.stack(logits) if logits else torch.empty(0)

    def move(self, src: int, dst: int, length: int) -> None:
        if src in self.caches:
            self.caches[dst] = self.caches.pop(src)

    def copy_rows(self, sources: list[int], targets: list[int], length: int) -> None:
        snapshot = {s: copy.deepcopy(self.caches[s]) for s in set(sources) if s in self.caches}
        for s, t in zip(sources, targets, strict=True):
            if s in snapshot:
                self.caches[t] = copy.deepcopy(snapshot[s])

    def idle(self) -> None:
        self.caches.clear()
