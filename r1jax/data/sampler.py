"""A deterministic sampler over a prompt set whose position can be saved and restored.

The order is a pure function of (seed, epoch): epoch ``e`` visits a permutation drawn from a PCG64
stream keyed by ``[seed, e]``. So the position (epoch, index) is the whole state — checkpoint it
with the model, and a resumed run draws exactly the prompts the uninterrupted run would have.
Batches run across epoch boundaries without dropping or repeating prompts.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class SamplerState:
    """Where the sampler is: the epoch, and how many of that epoch's items were already drawn."""

    epoch: int = 0
    index: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}


@dataclasses.dataclass(frozen=True)
class Sampler:
    """Order over ``num_items`` items; ``shuffle=False`` visits them in order every epoch."""

    num_items: int
    seed: int = 0
    shuffle: bool = True

    def __post_init__(self):
        if self.num_items < 1:
            raise ValueError(f"Sampler.num_items must be >= 1, got {self.num_items}")

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The item indices of ``epoch``, in the order they are drawn."""
        if not self.shuffle:
            return np.arange(self.num_items)
        rng = np.random.Generator(np.random.PCG64([self.seed, epoch]))
        return rng.permutation(self.num_items)

    def take(self, state: SamplerState, count: int) -> tuple[np.ndarray, SamplerState]:
        """The next ``count`` item indices from ``state``, and the state after them."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self.check(state)
        out, epoch, index = [], state.epoch, state.index
        while count > 0:
            order = self.epoch_order(epoch)
            chunk = order[index:index + count]
            out.append(chunk)
            count -= len(chunk)
            index += len(chunk)
            if index == self.num_items:
                epoch, index = epoch + 1, 0
        indices = np.concatenate(out) if out else np.zeros((0,), np.int64)
        return indices, SamplerState(epoch, index)

    def check(self, state: SamplerState) -> None:
        """Raises if ``state`` cannot belong to this sampler (e.g. the prompt set changed size)."""
        if state.epoch < 0 or not 0 <= state.index < self.num_items:
            raise ValueError(f"sampler state {state} is out of range for {self.num_items} items")

    def state_dict(self, state: SamplerState) -> dict[str, int]:
        """The state plus what it is only valid for, for a checkpoint."""
        return {**state.to_dict(), "num_items": self.num_items, "seed": self.seed, "shuffle": int(self.shuffle)}

    def restore(self, saved: Mapping[str, Any]) -> SamplerState:
        """The state from ``state_dict``; refuses one saved for another set size, seed or order."""
        for key, mine in (("num_items", self.num_items), ("seed", self.seed), ("shuffle", int(self.shuffle))):
            if key in saved and int(saved[key]) != mine:
                raise ValueError(f"saved sampler has {key}={saved[key]} but this sampler has {key}={mine}; "
                                 "resuming would draw a different order")
        state = SamplerState(int(saved["epoch"]), int(saved["index"]))
        self.check(state)
        return state
