"""Beam search (Kaito's `num_beams`) on top of the batched engine.

A beam search is a unit of `num_beams` sequences that the scheduler admits and preempts
together; every member decodes one token per iteration like any other sequence. After each
iteration the search scores every continuation of every beam, keeps the best `num_beams`, and
copies the cache rows of the parents into the slots of their children. Hypotheses are ranked
as transformers ranks them: summed log-probabilities over generated length ** length_penalty.
"""

from __future__ import annotations

import math

import torch

from .generation import LENGTH, STOP, GenerationRequest, Sequence, Sink


def unit(request: GenerationRequest, sink: Sink) -> list[Sequence]:
    """The sequences a request runs as: one, or one per beam."""
    if request.num_beams <= 1:
        return [Sequence(request, sink)]
    search = BeamSearch(request)
    members = [Sequence(request, sink, beam=search) for _ in range(request.num_beams)]
    search.members = members
    return members


class BeamSearch:
    def __init__(self, request: GenerationRequest):
        self.request = request
        self.width = request.num_beams
        self.members: list[Sequence] = []
        # The first member prefills the prompt alone; the others start as copies of it.
        self.started = False
        self.scores = [0.0] * self.width
        # (normalized score, tokens, ended with an end-of-sequence token)
        self.finished: list[tuple[float, list[int], bool]] = []

    def waiting(self, seq: Sequence) -> bool:
        """Whether `seq` sits out this iteration (a follower before the first token)."""
        return not self.started and seq is not self.members[0]

    def _normalized(self, score: float, length: int) -> float:
        return score / (max(length, 1) ** self.request.length_penalty)

    def _add(self, score: float, tokens: list[int], eos: bool) -> None:
        self.finished.append((score, tokens, eos))
        self.finished.sort(key=lambda h: h[0], reverse=True)
        del self.finished[self.width :]

    def advance(self, sampled: list[Sequence], logits: torch.Tensor, context: int):
        """Extend the beams by one token: the cache copies to make, and a finish reason or None.

        `sampled` are the members whose logits these are: the leader alone on the first
        token, every member after.
        """
        request = self.request
        generated = len(sampled[0].generated)
        scores = self.scores[: len(sampled)] if self.started else [0.0]
        rows = []
        for seq, row in zip(sampled, logits, strict=True):
            row = seq.sampler.adjust(row.clone(), seq.tokens, generated)
            rows.append(torch.log_softmax(row.float(), dim=-1))
        logprobs = torch.stack(rows) + torch.tensor(scores)[:, None]
        vocab = logprobs.shape[-1]
        top = torch.topk(logprobs.flatten(), min(2 * self.width, logprobs.numel()))
        chosen: list[tuple[Sequence, int, float]] = []  # (parent, token, score)
        for rank, (score, flat) in enumerate(
            zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ):
            parent, token = sampled[flat // vocab], flat % vocab
            if score == -math.inf:
                break
            if token in request.eos:
                if rank < self.width:
                    self._add(self._normalized(score, generated + 1), list(parent.generated), True)
                continue
            chosen.append((parent, token, score))
            if len(chosen) == self.width:
                break
        self.started = True

        # Children take their parents' cache rows (read all, then write: parents may be
        # children too) and their tokens.
        sources, targets = [], []
        length = sampled[0].cached
        histories = [list(parent.generated) for parent, _, _ in chosen]
        for child, (parent, token, score), history in zip(
            self.members, chosen, histories, strict=False
        ):
            if parent is not child:
                sources.append(parent.slot)
                targets.append(child.slot)
            child.generated = [*history, token]
            child.cached = length
            self.scores[self.members.index(child)] = score
        for child in self.members[len(chosen) :]:
            self.scores[self.members.index(child)] = -math.inf
        copies = (sources, targets, length)

        new_len = generated + 1
        if not chosen:
            return copies, STOP
        if new_len >= request.max_new_tokens or self.members[0].length >= context:
            for seq, score in zip(self.members, self.scores, strict=True):
                if score > -math.inf:
                    self._add(self._normalized(score, new_len), list(seq.generated), False)
            return copies, STOP if self.finished and self.finished[0][2] else LENGTH
        if len(self.finished) >= self.width:
            if request.early_stopping:
                return copies, STOP
            if self._normalized(max(self.scores), new_len) <= self.finished[-1][0]:
                return copies, STOP
        return copies, None

    def best(self) -> list[int]:
        return list(self.finished[0][1]) if self.finished else []
