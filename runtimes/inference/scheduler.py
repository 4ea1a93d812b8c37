"""Iteration-level scheduling: who is admitted, what each iteration computes, who is preempted.

Pure bookkeeping, no tensors. A unit is what is admitted and preempted together: one sequence,
or the beams of one beam search. Running sequences hold slots 0..n-1 of the KV cache; when one
leaves, the sequence in the highest slot moves into the hole (the engine copies its cache).

Each iteration decodes one token for every decoding sequence and spends what is left of a token
budget on prompt chunks, oldest first, so a long prompt never stalls running streams for long.
Chunk boundaries sit at multiples of `chunk` from the start of the sequence, whatever the load:
a prompt is split the same way when it runs alone and when it runs among others, which keeps
batched outputs equal to sequential ones.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .batch import Row, Step, align
from .generation import Sequence

Unit = list[Sequence]


@dataclass(frozen=True)
class Move:
    """Copy `length` cached positions of slot `src` into slot `dst`."""

    src: int
    dst: int
    length: int


@dataclass
class Plan:
    step: Step
    fed: list[Sequence]  # the sequence of each row, in row order
    sampled: list[Sequence]  # the sequences whose next token this step yields, in logits order
    capacity: int  # cache positions per slot the step needs


class Scheduler:
    def __init__(
        self,
        *,
        max_slots: int,
        budget: int,  # KV cache positions in all (slots x capacity)
        chunk: int,  # prompt chunk length (prefill granularity)
        step_tokens: int,  # tokens per iteration beyond the decoding ones
    ):
        self.max_slots = max_slots
        self.budget = budget
        self.chunk = chunk
        self.step_tokens = max(step_tokens, chunk)
        self.waiting: deque[Unit] = deque()
        self.running: list[Unit] = []  # admission order
        self.by_slot: list[Sequence] = []

    # -- queue ---------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self.waiting)

    @property
    def active(self) -> int:
        return len(self.by_slot)

    def enqueue(self, unit: Unit) -> None:
        """Add a unit at the back of the queue (the engine bounds the queue)."""
        self.waiting.append(unit)

    def remove(self, unit: Unit) -> list[Move]:
        """Take a unit out, queued or running; the cache moves that keep slots dense."""
        if unit in self.running:
            self.running.remove(unit)
            return self._free(unit)
        if unit in self.waiting:
            self.waiting.remove(unit)
        return []

    def _free(self, unit: Unit) -> list[Move]:
        moves: list[Move] = []
        # Highest slots first, so that a hole is never filled from a slot about to be freed.
        for seq in sorted(unit, key=lambda s: s.slot, reverse=True):
            hole = seq.slot
            last = len(self.by_slot) - 1
            mover = self.by_slot.pop()
            if hole != last:
                self.by_slot[hole] = mover
                mover.slot = hole
                moves.append(Move(last, hole, mover.cached))
            seq.slot = None
            seq.cached = 0
        return moves

    # -- admission -----------------------------------------------------------------------

    def _first_end(self, seq: Sequence) -> int:
        return min(seq.length, (seq.cached // self.chunk + 1) * self.chunk)

    def _fits(self, slots: int, positions: int) -> bool:
        return slots <= self.max_slots and slots * align(positions) <= self.budget

    def admit(self) -> list[Unit]:
        """Move queued units into free slots while they fit, oldest first."""
        admitted: list[Unit] = []
        longest = max((s.length for s in self.by_slot), default=0)
        prefilling = sum(s.pending for s in self.by_slot if s.pending > 1)
        while self.waiting and prefilling < self.step_tokens:
            unit = self.waiting[0]
            need = max(longest, *(self._first_end(s) + 1 for s in unit))
            if not self._fits(len(self.by_slot) + len(unit), need):
                break
            self.waiting.popleft()
            for seq in unit:
                seq.slot = len(self.by_slot)
                seq.cached = 0
                self.by_slot.append(seq)
            self.running.append(unit)
            admitted.append(unit)
            longest = max(longest, need)
            prefilling += sum(s.pending for s in unit)
        return admitted

    # -- iterations ----------------------------------------------------------------------

    def plan(self) -> tuple[Plan | None, list[Move], list[Unit]]:
        """The next iteration, the cache moves to apply first, and the units preempted for it."""
        moves: list[Move] = []
        preempted: list[Unit] = []
        while True:
            plan = self._build()
            if plan is None or self._fits(plan.step.slots, plan.capacity) or len(self.running) < 2:
                return plan, moves, preempted
            # Out of cache: the newest unit goes back to the front of the queue and will
            # recompute its cache from its tokens when it is readmitted. Beam searches stay:
            # their members would come back out of step with each other.
            candidates = [u for u in self.running if u[0].beam is None]
            if not candidates:
                return plan, moves, preempted
            unit = candidates[-1]
            moves += self.remove(unit)
            self.waiting.appendleft(unit)
            preempted.append(unit)

    def _build(self) -> Plan | None:
        decode: list[tuple[Row, Sequence]] = []
        prefill: list[tuple[Row, Sequence]] = []
        budget = self.step_tokens
        for unit in self.running:
            for seq in unit:
                if seq.done or seq.pending <= 0:
                    continue
                if seq.beam is not None and seq.beam.waiting(seq):
                    continue
                adapter = seq.request.adapter
                if seq.pending == 1:
                    last = seq.generated[-1] if seq.generated else seq.request.prompt[-1]
                    decode.append((Row(seq.slot, [last], seq.cached, True, adapter), seq))
                    continue
                end = self._first_end(seq)
                n = end - seq.cached
                if prefill and n > budget:
                    continue
                tokens = seq.tokens[seq.cached : end]
                prefill.append((Row(seq.slot, tokens, seq.cached, end == seq.length, adapter), seq))
                budget -= n
        entries = decode + prefill
        if not entries:
            return None
        # Rows of one adapter side by side: adapter deltas then apply to contiguous slices.
        entries.sort(key=lambda e: e[0].adapter)
        step = Step([row for row, _ in entries], slots=len(self.by_slot))
        sampled = [seq for row, seq in entries if row.sample]
        # Room for this step's rows and for what every slot already holds.
        capacity = max(max(row.end for row, _ in entries), *(s.cached for s in self.by_slot))
        return Plan(step, [seq for _, seq in entries], sampled, capacity)
