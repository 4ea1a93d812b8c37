"""Packing tokenized conversations into steps, with no padding and no cross-document attention.

A step is a list of whole examples whose lengths add up to at most the token budget
(max_length x per_device_train_batch_size). They are laid end to end in one row; position ids
restart at each example and the attention runs per example (see attention.py), so the result is
the same as training them separately, without the padding a batch would need.

The order is a pure function of (seed, epoch): a restarted job replays the same steps and skips
the ones its checkpoint already covers. Pure: no torch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .chat import Example

_OPEN_BINS = 8  # how far first-fit may reorder: enough to fill rows, little enough to stay random


def plan_epoch(
    lengths: list[int], budget: int, *, seed: int, epoch: int, shuffle: bool
) -> list[list[int]]:
    """Example indices per step for one epoch: first-fit over a few open rows."""
    order = list(range(len(lengths)))
    if shuffle:
        random.Random(f"{seed}:{epoch}").shuffle(order)
    steps: list[list[int]] = []
    bins: list[tuple[int, list[int]]] = []  # (free tokens, members)
    for index in order:
        size = min(lengths[index], budget)
        for k, (free, members) in enumerate(bins):
            if size <= free:
                members.append(index)
                bins[k] = (free - size, members)
                break
        else:
            bins.append((budget - size, [index]))
            if len(bins) > _OPEN_BINS:
                # Close the fullest row; it will not take anything more.
                fullest = min(range(len(bins)), key=lambda k: bins[k][0])
                steps.append(bins.pop(fullest)[1])
    steps.extend(members for _, members in bins)
    return steps


@dataclass
class Step:
    """One packed step, ready to become tensors."""

    input_ids: list[int]
    position_ids: list[int]
    bounds: list[int]  # document boundaries: [0, len0, len0+len1, ..., total]
    target_positions: list[int]  # positions whose hidden state predicts a target token
    target_ids: list[int]

    @property
    def tokens(self) -> int:
        return len(self.input_ids)


def collate(examples: list[Example], indices: list[int]) -> Step:
    ids: list[int] = []
    positions: list[int] = []
    bounds = [0]
    target_positions: list[int] = []
    target_ids: list[int] = []
    for index in indices:
        example = examples[index]
        offset = len(ids)
        ids.extend(example.input_ids)
        positions.extend(range(len(example)))
        bounds.append(len(ids))
        for t in range(1, len(example)):
            if example.targets[t]:
                target_positions.append(offset + t - 1)
                target_ids.append(example.input_ids[t])
    return Step(ids, positions, bounds, target_positions, target_ids)


def split(
    count: int, train_fraction: float, *, seed: int, shuffle: bool
) -> tuple[list[int], list[int]]:
    """Train and eval indices. At least one eval example when there is a split at all."""
    order = list(range(count))
    if shuffle:
        random.Random(f"split:{seed}").shuffle(order)
    if train_fraction >= 1 or count < 2:
        return order, []
    n_eval = max(1, round(count * (1 - train_fraction)))
    return order[n_eval:], order[:n_eval]
