"""What one engine iteration computes: a flat list of rows, each a slice of one sequence.

Pure data, built by the scheduler and consumed by a model runner. A decode row feeds one token;
a prefill row feeds a chunk of the prompt. Rows that share an adapter are contiguous, so that
adapter deltas apply to plain slices of the flattened token batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Attention reads keys in multiples of this many positions, so that a row reduces in the same
# order whatever else is in the batch (see decoder.py on batch invariance).
ALIGN = 16


def align(n: int) -> int:
    """`n` positions rounded up to the attention's granularity (at least one block)."""
    return max(ALIGN, -(-n // ALIGN) * ALIGN)


@dataclass
class Row:
    slot: int  # the sequence's row in the KV cache
    tokens: list[int]  # fed this iteration
    start: int  # position of tokens[0], i.e. how many positions are cached already
    sample: bool  # whether the logits after the last token are wanted
    adapter: int = 0  # 0 = base model, else 1 + index into the runner's adapter table

    @property
    def end(self) -> int:
        return self.start + len(self.tokens)


@dataclass
class Step:
    rows: list[Row]
    slots: int  # slots in use; attention may read slots [0, slots)
    token_count: int = field(init=False)

    def __post_init__(self) -> None:
        self.token_count = sum(len(r.tokens) for r in self.rows)

    def adapter_ranges(self) -> list[tuple[int, int, int]]:
        """(adapter, first token, end token) over the flattened tokens, for adapters != base."""
        out: list[tuple[int, int, int]] = []
        offset = 0
        for row in self.rows:
            n = len(row.tokens)
            if row.adapter:
                if out and out[-1][0] == row.adapter and out[-1][2] == offset:
                    out[-1] = (row.adapter, out[-1][1], offset + n)
                else:
                    out.append((row.adapter, offset, offset + n))
            offset += n
        return out
