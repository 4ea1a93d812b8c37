"""Token ids to text, incrementally: deltas that never split a character, and stop strings."""

from __future__ import annotations

REPLACEMENT = "\ufffd"


class Detokenizer:
    """Turns a growing list of token ids into text deltas.

    Decoding token by token breaks multi-byte characters and drops the leading spaces some
    tokenizers attach to word pieces, so each delta is the difference between decoding a short
    window that ends at the newest token and the same window without it.
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self.prefix = 0  # window start
        self.read = 0  # tokens already turned into text

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip)

    def push(self, ids: list[int]) -> str:
        self.ids.extend(ids)
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return after[len(before) :] if len(after) > len(before) else ""


class StopMatcher:
    """Finds stop strings in streamed text; holds back text that may begin one.

    Each stop string runs a Knuth-Morris-Pratt automaton over the text: its state is how much of
    the stop ends the text so far. A character advances every automaton in amortized constant
    time, so a push costs O(characters x stops) whatever the stop strings are; the longest state
    is what must be held back. (Checking every prefix of every stop against the end of the text
    costs O(length^2) per push, which a client's stop list can make arbitrarily slow.)
    """

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.fallback = [_fallback(s) for s in self.stops]
        self.state = [0] * len(self.stops)
        self.pending = ""
        self.stopped = False

    def push(self, text: str) -> str:
        """The text that is safe to emit now. After a stop string, `stopped` is set."""
        if not self.stops:
            return text
        if self.stopped:
            return ""
        start = len(self.pending)
        self.pending += text
        cut = -1
        for offset in range(start, len(self.pending)):
            char = self.pending[offset]
            for i, stop in enumerate(self.stops):
                k, fallback = self.state[i], self.fallback[i]
                while k and stop[k] != char:
                    k = fallback[k - 1]
                if stop[k] == char:
                    k += 1
                if k == len(stop):  # a whole stop ends here; the earliest start in this push wins
                    begin = offset + 1 - k
                    cut = begin if cut < 0 else min(cut, begin)
                    k = fallback[k - 1]
                self.state[i] = k
        if cut >= 0:
            self.stopped = True
            out, self.pending = self.pending[:cut], ""
            return out
        hold = max(self.state)
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(self.pending) - hold :]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


def _fallback(stop: str) -> list[int]:
    """KMP's failure function: for each prefix of `stop`, the length of its longest proper
    prefix that is also its suffix."""
    table = [0] * len(stop)
    k = 0
    for i in range(1, len(stop)):
        while k and stop[i] != stop[k]:
            k = table[k - 1]
        if stop[i] == stop[k]:
            k += 1
        table[i] = k
    return table
