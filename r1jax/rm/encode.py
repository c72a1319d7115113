"""Text to reward-model inputs: ``prompt ⊕ "\\n" ⊕ response``, left-padded to a length bucket.

The same rendering serves training (preference pairs) and scoring (a policy's completions), so a
reward model sees at scoring time exactly the kind of text it was trained on.
"""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp

from r1jax.data.preferences import PreferencePair
from r1jax.rm.step import PairBatch
from r1jax.tokenizer import Tokenizer


def render(prompt: str, response: str) -> str:
    return f"{prompt}\n{response}"


def _bucket(length: int) -> int:
    return max(16, 1 << (length - 1).bit_length())


def encode_texts(tokenizer: Tokenizer, prompts: Sequence[str], responses: Sequence[str],
                 max_tokens: int, length: int | None = None):
    """Left-padded ``[B, L]`` ids and mask; a text longer than ``max_tokens`` keeps its end (the
    response, which is what is judged)."""
    rows = [tokenizer.encode(render(p, r))[-max_tokens:] for p, r in zip(prompts, responses)]
    batch = tokenizer.pad(rows, side="left",
                          length=length or _bucket(max(len(r) for r in rows)))
    return batch.ids_BxL, batch.mask_BxL


def encode_pairs(tokenizer: Tokenizer, pairs: Sequence[PreferencePair], max_tokens: int
                 ) -> PairBatch:
    prompts = [p.prompt for p in pairs for _ in range(2)]
    responses = [r for p in pairs for r in (p.chosen, p.rejected)]
    ids, mask = encode_texts(tokenizer, prompts, responses, max_tokens)
    shape = (len(pairs), 2, ids.shape[1])
    return PairBatch(jnp.asarray(ids.reshape(shape)), jnp.asarray(mask.reshape(shape)))
