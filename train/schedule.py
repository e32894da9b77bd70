"""Who trains on what, and when: the process-group facts of a rank, the data order of an epoch,
the learning-rate schedule.

The data order is a pure function of (seed, epoch, rank, world size) (:func:`epoch_order`), so a
resumed run visits the same items in the same order as the interrupted one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

__all__ = ["DistInfo", "epoch_order", "lr_factor"]


@dataclass(frozen=True)
class DistInfo:
    """Process group facts: ``rank``, ``world_size``, ``local_rank`` (from torchrun's env)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> DistInfo:
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                   int(os.environ.get("LOCAL_RANK", "0")))


def epoch_order(n_items: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                shuffle: bool = True) -> list[int]:
    """The item indices rank ``rank`` visits in ``epoch``: a (seed, epoch)-seeded permutation,
    wrapped to a multiple of ``world_size``, every ``world_size``-th item from ``rank``."""
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
    if shuffle:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED, int(epoch)]))
        order = rng.permutation(n_items)
    else:
        order = np.arange(n_items)
    total = math.ceil(n_items / world_size) * world_size
    order = np.resize(order, total)
    return [int(i) for i in order[rank::world_size]]


def lr_factor(step: int, total_steps: int, warmup_steps: int, kind: str = "cosine", min_ratio: float = 0.0) -> float:
    """Learning-rate multiplier at optimiser step ``step`` (0-based): linear warm-up to 1 over
    ``warmup_steps``, then cosine to ``min_ratio`` at ``total_steps`` (or constant 1)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
