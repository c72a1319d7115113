"""Sequence packing: (prompt, response) token sequences laid into fixed-length rows.

Each example becomes one *segment* of a row: tokens attend only within their segment
(``segment_ids``, 1, 2, … per row; 0 is padding) and positions restart at 0 in every segment, so a
packed row computes exactly what its examples would alone. Targets are next-token shifted *within*
the segment; the loss weight of position t is 1 when its target (token t + 1) is a response token
(``loss_on="response"``, SFT) or any token of the segment (``loss_on="all"``, pretraining).

Rows are filled greedily first-fit in example order: each example goes to the first row with room,
else opens a new one. The same examples always give the same rows.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

LOSS_ON = ("response", "all")
OVERFLOW = ("error", "truncate")

Example = tuple[Sequence[int], Sequence[int]]  # (prompt ids, response ids)


@dataclasses.dataclass(frozen=True)
class PackedRows:
    """``[R, L]`` host arrays. ``targets[r, t]`` is the token that position t predicts (``pad_id``
    where none); ``loss_weights`` float32; ``example_ids`` the index of the source example (-1 on
    padding), for per-example statistics."""

    tokens: np.ndarray
    targets: np.ndarray
    loss_weights: np.ndarray
    segment_ids: np.ndarray
    positions: np.ndarray
    example_ids: np.ndarray

    @property
    def num_rows(self) -> int:
        return self.tokens.shape[0]

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1]

    def rows(self, start: int, stop: int) -> "PackedRows":
        return PackedRows(*(getattr(self, f.name)[start:stop] for f in dataclasses.fields(self)))

    def fill_rate(self) -> float:
        """Share of slots holding a real token."""
        return float((self.segment_ids > 0).mean()) if self.tokens.size else 0.0


def empty_rows(num_rows: int, seq_len: int, pad_id: int = 0) -> PackedRows:
    shape = (num_rows, seq_len)
    return PackedRows(
        tokens=np.full(shape, pad_id, np.int32), targets=np.full(shape, pad_id, np.int32),
        loss_weights=np.zeros(shape, np.float32), segment_ids=np.zeros(shape, np.int32),
        positions=np.zeros(shape, np.int32), example_ids=np.full(shape, -1, np.int32))


def pack_examples(examples: Sequence[Example], seq_len: int, *, loss_on: str = "response",
                  pad_id: int = 0, overflow: str = "error") -> PackedRows:
    """Pack ``(prompt, response)`` examples into rows of ``seq_len`` tokens (first-fit, in order).

    ``overflow``: an example longer than ``seq_len`` raises (``"error"``) or keeps its first
    ``seq_len`` tokens (``"truncate"``). An example with no loss-bearing target still occupies
    its slots (it contributes nothing to the loss).
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2 (one input and one target), got {seq_len}")
    if loss_on not in LOSS_ON:
        raise ValueError(f"loss_on {loss_on!r} is not one of {LOSS_ON}")
    if overflow not in OVERFLOW:
        raise ValueError(f"overflow {overflow!r} is not one of {OVERFLOW}")
    placed: list[list[tuple[int, np.ndarray, np.ndarray]]] = []  # per row: (example, ids, is_resp)
    room = np.zeros(0, np.int64)
    for index, (prompt, response) in enumerate(examples):
        ids = np.asarray(list(prompt) + list(response), np.int32)
        is_response = np.arange(len(ids)) >= len(prompt)
        if len(ids) == 0:
            continue
        if len(ids) > seq_len:
            if overflow == "error":
                raise ValueError(
                    f"example {index} has {len(ids)} tokens (prompt {len(prompt)} + response "
                    f"{len(response)}) > seq_len={seq_len}; raise seq_len or pass "
                    "overflow='truncate'")
            ids, is_response = ids[:seq_len], is_response[:seq_len]
        fits = np.flatnonzero(room >= len(ids))
        if len(fits):
            row = int(fits[0])
        else:
            row = len(placed)
            placed.append([])
            room = np.append(room, seq_len)
        placed[row].append((index, ids, is_response))
        room[row] -= len(ids)

    out = empty_rows(len(placed), seq_len, pad_id)
    for row, segments in enumerate(placed):
        start = 0
        for segment, (index, ids, is_response) in enumerate(segments, start=1):
            n = len(ids)
            cols = slice(start, start + n)
            out.tokens[row, cols] = ids
            out.targets[row, start:start + n - 1] = ids[1:]
            weight = np.ones(n - 1, bool) if loss_on == "all" else is_response[1:]
            out.loss_weights[row, start:start + n - 1] = weight
            out.segment_ids[row, cols] = segment
            out.positions[row, cols] = np.arange(n)
            out.example_ids[row, cols] = index
            start += n
    return out


def iterate_batches(rows: PackedRows, batch_size: int, *, drop_remainder: bool = False,
                    pad_id: int = 0) -> Iterator[PackedRows]:
    """Consecutive batches of ``batch_size`` rows; the last is padded with empty rows (weight 0)
    unless ``drop_remainder``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, rows.num_rows, batch_size):
        batch = rows.rows(start, start + batch_size)
        if batch.num_rows < batch_size:
            if drop_remainder:
                return
            filler = empty_rows(batch_size - batch.num_rows, rows.seq_len, pad_id)
            batch = PackedRows(*(np.concatenate([getattr(batch, f.name), getattr(filler, f.name)])
                                 for f in dataclasses.fields(PackedRows)))
        yield batch


def per_example_losses(logp: np.ndarray, rows: PackedRows, num_examples: int) -> np.ndarray:
    """``-Σ w·logp / Σ w`` of every source example from per-position log-probs ``[R, L]``
    (NaN for an example without loss-bearing targets)."""
    ids = rows.example_ids.reshape(-1)
    keep = ids >= 0
    w = rows.loss_weights.reshape(-1)[keep].astype(np.float64)
    lp = np.asarray(logp, np.float64).reshape(-1)[keep]
    total = np.bincount(ids[keep], weights=-w * lp, minlength=num_examples)
    count = np.bincount(ids[keep], weights=w, minlength=num_examples)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count
