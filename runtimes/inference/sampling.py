"""Choosing the next token from logits: greedy rows in one argmax, sampled rows one by one.

The logits processors follow transformers' semantics and order (repetition penalty, minimum
length; then temperature, top-k, top-p, typical-p) so that Kaito's generate_kwargs mean here
what they meant in Kaito's transformers runtime. Greedy decoding never builds a softmax over
the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    min_new_tokens: int = 0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature <= 0.0

    @property
    def penalized(self) -> bool:
        return self.repetition_penalty != 1.0


class Sampler:
    """Per-sequence sampling state (its random generator); created when the sequence starts."""

    def __init__(self, params: SamplingParams, eos: frozenset[int]):
        self.params = params
        self.eos = eos
        self.generator: torch.Generator | None = None
        if not params.greedy:
            self.generator = torch.Generator()
            seed = params.seed if params.seed is not None else torch.seed()
            self.generator.manual_seed(int(seed) % (2**63))

    def adjust(self, logits: torch.Tensor, history: list[int], generated: int) -> torch.Tensor:
        """Repetition penalty and minimum length, in place on one row of logits."""
        p = self.params
        if p.penalized and history:
            ids = torch.tensor(sorted(set(history)), device=logits.device)
            scores = logits.index_select(0, ids)
            penalty = p.repetition_penalty
            scores = torch.where(scores < 0, scores * penalty, scores / penalty)
            logits.index_copy_(0, ids, scores)
        if generated < p.min_new_tokens and self.eos:
            logits[list(self.eos)] = float("-inf")
        return logits

    def sample(self, logits: torch.Tensor) -> int:
        """Draw one token from one row of logits (already adjusted)."""
        p = self.params
        scores = logits.float() / p.temperature
        if p.top_k and p.top_k < scores.shape[-1]:
            kth = torch.topk(scores, p.top_k).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if p.top_p < 1.0:
            scores = _top_p(scores, p.top_p)
        if p.typical_p < 1.0:
            scores = _typical(scores, p.typical_p)
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs.cpu(), 1, generator=self.generator))


def _top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    # Keep the smallest set of most likely tokens whose probability reaches top_p.
    ordered, order = torch.sort(scores, descending=False)
    cumulative = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
    drop = cumulative <= (1 - top_p)
    drop[-1] = False  # always keep the most likely token
    return scores.masked_fill(drop.scatter(0, order, drop), float("-inf"))


def _typical(scores: torch.Tensor, mass: float) -> torch.Tensor:
    # Locally typical sampling: keep tokens whose surprisal is closest to the entropy.
    logp = torch.log_softmax(scores, dim=-1)
    p = logp.exp()
    entropy = -(torch.nan_to_num(logp * p)).sum()
    shifted = (-logp - entropy).abs()
    ordered, order = torch.sort(shifted)
    cumulative = scores.softmax(dim=-1).gather(-1, order).cumsum(dim=-1)
    last = int((cumulative < mass).sum())
    last = min(last, scores.shape[-1] - 1)
    drop = ordered > ordered[last]
    drop[0] = False  # always keep the most typical token
    return scores.masked_fill(drop.scatter(0, order, drop), float("-inf"))


def choose(logits: torch.Tensor, sequences) -> list[int]:
    """The next token for each row; row i belongs to sequences[i] (its sampler and tokens)."""
    out = [0] * len(sequences)
    plain: list[int] = []  # greedy rows without processors: one batched argmax
    for i, seq in enumerate(sequences):
        sampler, generated = seq.sampler, len(seq.generated)
        p = sampler.params
        needs_adjust = p.penalized or generated < p.min_new_tokens
        if p.greedy and not needs_adjust:
            plain.append(i)
            continue
        row = logits[i]
        if needs_adjust:
            history = seq.tokens if p.penalized else []
            row = sampler.adjust(row.clone(), history, generated)
        out[i] = int(row.argmax()) if p.greedy else sampler.sample(row)
    if plain:
        index = torch.tensor(plain, device=logits.device)
        for i, token in zip(
            plain, logits.index_select(0, index).argmax(dim=-1).tolist(), strict=True
        ):
            out[i] = token
    return out
