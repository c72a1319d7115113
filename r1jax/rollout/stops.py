"""When a completion ends: stop ids and stop token sequences on device, stop strings on the host.

A stop string such as ``</answer>`` is encoded once into its canonical token sequence, which the
decode loop watches for (so generation ends early in the common case). Because a model may spell the
same string with other tokens, the host then cuts every completion after the first token at which
its decoded text contains a stop string — a binary search over prefixes, ``O(log T)`` decodes.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class StopCriteria:
    """Static: single stop ids, and stop sequences right-aligned in a ``-1``-padded table."""

    ids: tuple[int, ...] = ()
    sequences: tuple[tuple[int, ...], ...] = ()

    @classmethod
    def build(cls, stop_ids: Sequence[int], sequences: Sequence[Sequence[int]]) -> "StopCriteria":
        single = set(int(i) for i in stop_ids)
        multi = set()
        for seq in sequences:
            seq = tuple(int(i) for i in seq)
            if not seq:
                raise ValueError("an empty stop sequence would stop every completion at once")
            (single.add(seq[0]) if len(seq) == 1 else multi.add(seq))
        return cls(tuple(sorted(single)), tuple(sorted(multi)))

    @property
    def window(self) -> int:
        """How many recent tokens the decode loop keeps to match sequences (at least 1)."""
        return max([1] + [len(s) for s in self.sequences])

    def table(self) -> np.ndarray:
        table = np.full((len(self.sequences), self.window), -1, np.int32)
        for row, seq in enumerate(self.sequences):
            table[row, self.window - len(seq):] = seq
        return table

    def hit(self, tokens_B, recent_BxM):
        """Whether each row's newest token (the last column of ``recent``) completes a stop."""
        hit_B = jnp.zeros(tokens_B.shape, bool)
        if self.ids:
            hit_B = jnp.isin(tokens_B, jnp.asarray(self.ids, jnp.int32))
        if self.sequences:
            table_SxM = jnp.asarray(self.table())
            match_BxSxM = (recent_BxM[:, None, :] == table_SxM[None]) | (table_SxM[None] < 0)
            hit_B |= jnp.any(jnp.all(match_BxSxM, axis=-1), axis=-1)
        return hit_B


def stop_string_cut(decode, tokens: Sequence[int], stop_strings: Sequence[str]) -> int | None:
    """The number of tokens up to and including the one that completes the first stop string in
    ``decode(tokens)``, or None if no stop string occurs."""
    if not any(s in decode(tokens) for s in stop_strings):
        return None
    lo, hi = 1, len(tokens)  # the shortest prefix whose text contains a stop string
    while lo < hi:
        mid = (lo + hi) // 2
        if any(s in decode(tokens[:mid]) for s in stop_strings):
            hi = mid
        else:
            lo = mid + 1
    return lo
