"""The key/value cache: one preallocated tensor per layer, one row ("slot") per running sequence.

Layout per layer: keys and values of shape [slots, kv_heads, capacity, head_dim]. Running
sequences always occupy slots 0..n-1 (a finished sequence's slot is refilled by moving the last
one into it), so batched decode attention reads a plain view of the first n slots, no gather.
Capacity grows geometrically when a longer sequence arrives and shrinks back when idle.
"""

from __future__ import annotations

import torch

from .batch import align


class SlotCache:
    def __init__(
        self,
        *,
        layers: int,
        kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        devices: list[torch.device],
        max_slots: int,
        initial_capacity: int = 256,
    ):
        self.layers = layers
        self.kv_heads = kv_heads
        self.head_dim = head_dim
        self.dtype = dtype
        self.devices = devices  # one per layer (layers may sit on different GPUs)
        self.max_slots = max_slots
        self.slots = 0  # allocated rows (>= running sequences)
        self.capacity = 0
        self.initial_capacity = align(initial_capacity)
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * _itemsize(self.dtype)

    def ensure(self, slots: int, capacity: int, budget: int | None = None) -> None:
        """Make room for `slots` rows of `capacity` positions, keeping what is cached.

        Grows geometrically, so that a stream of slightly longer requests reallocates rarely,
        but never past `budget` positions in all (slots x capacity) when one is given.
        """
        slots = min(self.max_slots, max(slots, 1))
        capacity = align(capacity)
        if slots <= self.slots and capacity <= self.capacity:
            return
        new_slots = self.slots
        if slots > self.slots:
            new_slots = max(slots, min(self.max_slots, 2 * self.slots))
        new_cap = self.capacity
        if capacity > self.capacity:
            new_cap = align(max(capacity, 2 * self.capacity, self.initial_capacity))
        if budget is not None and new_slots * new_cap > budget:
            new_slots, new_cap = max(slots, 1), capacity
        self._reallocate(new_slots, new_cap)

    def _reallocate(self, new_slots: int, new_cap: int) -> None:
        keep_slots, keep_cap = min(self.slots, new_slots), min(self.capacity, new_cap)
        keys, values = [], []
        for layer in range(self.layers):
            shape = (new_slots, self.kv_heads, new_cap, self.head_dim)
            device = self.devices[layer]
            k = torch.zeros(shape, dtype=self.dtype, device=device)
            v = torch.zeros(shape, dtype=self.dtype, device=device)
            if self.keys and keep_slots and keep_cap:
                k[:keep_slots, :, :keep_cap] = self.keys[layer][:keep_slots, :, :keep_cap]
                v[:keep_slots, :, :keep_cap] = self.values[layer][:keep_slots, :, :keep_cap]
            keys.append(k)
            values.append(v)
            # Free the old layer before allocating the next one: peak memory stays one layer
            # above the new size.
            if self.keys:
                self.keys[layer] = self.values[layer] = None
        self.keys, self.values = keys, values
        self.slots, self.capacity = new_slots, new_cap

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy the first `length` positions of slot `src` into slot `dst`."""
        if src == dst or length <= 0:
            return
        for layer in range(self.layers):
            self.keys[layer][dst, :, :length] = self.keys[layer][src, :, :length]
            self.values[layer][dst, :, :length] = self.values[layer][src, :, :length]

    def copy_rows(self, sources: list[int], targets: list[int], length: int) -> None:
        """targets[i] <- sources[i] for every layer at once (beam search reorders its rows)."""
        if not sources or length <= 0:
            return
        src = torch.tensor(sources)
        dst = torch.tensor(targets)
        for layer in range(self.layers):
            device = self.devices[layer]
            s, d = src.to(device), dst.to(device)
            self.keys[layer][d, :, :length] = self.keys[layer][s, :, :length]
            self.values[layer][d, :, :length] = self.values[layer][s, :, :length]

    def release(self) -> None:
        """Free the memory when nothing runs; the next request allocates what it needs."""
        self.keys, self.values = [], []
        self.slots = self.capacity = 0


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()
