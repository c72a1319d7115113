"""Next-token sampling: temperature, top-k, top-p (nucleus) and greedy.

The returned log-probability of a sampled token is ``log softmax(z / T)[token]`` — the policy's
temperature-scaled distribution *before* top-k/top-p truncation — which is exactly what the trainer
recomputes for the old policy, so the two can be compared to measure sampler/trainer drift.
Greedy decoding (``temperature == 0``) reports ``log softmax(z)[argmax]``.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """Static sampling settings (part of the compiled program's identity)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0

    def __post_init__(self):
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or int(self.top_k) != self.top_k:
            raise ValueError(f"top_k must be a non-negative integer (0 = off), got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _largest_threshold(satisfied, upper_B):
    """The largest float32 ``t`` in ``[0, upper]`` with ``satisfied(t)``, for a predicate that holds
    at 0 and is monotone (true below some point, false above). Exact: a bisection over the bit
    patterns of non-negative floats, which are ordered like the floats themselves."""
    lo_B = jnp.zeros_like(upper_B, jnp.int32)
    hi_B = jax.lax.bitcast_convert_type(upper_B, jnp.int32) + 1

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        ok = satisfied(jax.lax.bitcast_convert_type(mid, jnp.float32))
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    lo_B, _ = jax.lax.fori_loop(0, 32, halve, (lo_B, hi_B))
    return jax.lax.bitcast_convert_type(lo_B, jnp.float32)


def nucleus_mask(weights_BxV: jax.Array, params: SamplingParams) -> jax.Array:
    """Which tokens survive top-k and then top-p, given unnormalized probabilities ``weights``.

    Top-k keeps tokens at least as likely as the k-th; top-p then keeps the smallest set of most
    likely tokens whose renormalized mass reaches ``top_p`` (so at least one token survives).
    Tokens tied with the last kept one are kept too. No sort: each threshold is found by bisection.
    """
    keep_BxV = jnp.ones(weights_BxV.shape, bool)
    upper_B = jnp.max(weights_BxV, axis=-1)
    if 0 < params.top_k < weights_BxV.shape[-1]:
        kth_B = _largest_threshold(
            lambda t: jnp.sum(weights_BxV >= t[:, None], axis=-1) >= params.top_k, upper_B)
        keep_BxV &= weights_BxV >= kth_B[:, None]
    if params.top_p < 1:
        kept_BxV = jnp.where(keep_BxV, weights_BxV, 0.0)
        need_B = params.top_p * jnp.sum(kept_BxV, axis=-1)
        cut_B = _largest_threshold(
            lambda t: jnp.sum(jnp.where(kept_BxV >= t[:, None], kept_BxV, 0.0), axis=-1) >= need_B,
            upper_B)
        keep_BxV &= kept_BxV >= cut_B[:, None]
    return keep_BxV


def cdf_block(vocab: int) -> int:
    """Tokens per block of the two-level cumulative sum: the power of two at or above sqrt(V)
    (32 for V = 512, 512 for Qwen's 151,936), so both levels are short scans — XLA:CPU computes
    a cumulative sum as a windowed reduction whose cost grows with the scan's length."""
    return max(8, 1 << math.ceil(math.log2(math.sqrt(vocab))))


def inverse_cdf_sample(u_B: jax.Array, weights_BxV: jax.Array) -> jax.Array:
    """The token ``i`` with ``cdf(i-1) <= u·total < cdf(i)`` for unnormalized ``weights >= 0``.

    One uniform per row instead of one Gumbel draw per vocabulary entry. The cumulative sum is
    two-level (block masses, then within the chosen block) so that float32 rounding moves each
    token's probability by ~1e-7 of its block's mass rather than of the total.
    """
    batch, vocab = weights_BxV.shape
    block = cdf_block(vocab)
    blocks = -(-vocab // block)
    w_BxNxC = jnp.pad(weights_BxV, ((0, 0), (0, blocks * block - vocab))).reshape(
        batch, blocks, block)
    mass_BxN = w_BxNxC.sum(axis=-1)
    cdf_BxN = jnp.cumsum(mass_BxN, axis=-1)
    target_B = u_B * cdf_BxN[:, -1]
    block_B = _first_above(cdf_BxN, target_B, mass_BxN > 0)
    row_BxC = jnp.take_along_axis(w_BxNxC, block_B[:, None, None], axis=1)[:, 0]
    before_B = jnp.take_along_axis(cdf_BxN - mass_BxN, block_B[:, None], axis=1)[:, 0]
    inner_B = _first_above(jnp.cumsum(row_BxC, axis=-1), target_B - before_B, row_BxC > 0)
    return (block_B * block + inner_B).astype(jnp.int32)


def _first_above(cdf_BxC, target_B, positive_BxC):
    """First index whose cdf exceeds the target; if rounding puts the target past the end, the last
    index with positive weight (never a zero-probability token)."""
    index_B = jnp.sum(cdf_BxC <= target_B[:, None], axis=-1)
    last_positive_B = cdf_BxC.shape[1] - 1 - jnp.argmax(positive_BxC[:, ::-1], axis=-1)
    return jnp.minimum(index_B, last_positive_B)


def sample(rng: jax.Array, logits_BxV: jax.Array, params: SamplingParams):
    """Draw one token per row; returns ``(tokens_B int32, logprobs_B float32)``."""
    u_B = None if params.greedy else jax.random.uniform(rng, (logits_BxV.shape[0],), jnp.float32)
    return sample_with_uniform(u_B, logits_BxV, params)


def sample_with_uniform(u_B: jax.Array | None, logits_BxV: jax.Array, params: SamplingParams):
    """``sample`` given each row's uniform draw in [0, 1) (unused, and may be None, if greedy).

    The decode loop draws every step's uniforms before it starts: one random-bits call per
    rollout instead of one per step (each is a loop of its own on CPU).
    """
    logits_BxV = logits_BxV.astype(jnp.float32)
    if params.greedy:
        tokens_B = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
        policy_BxV = jax.nn.log_softmax(logits_BxV, axis=-1)
        return tokens_B, jnp.take_along_axis(policy_BxV, tokens_B[:, None], axis=-1)[:, 0]
    scaled_BxV = logits_BxV / params.temperature if params.temperature != 1 else logits_BxV
    # One exp pass serves both the sampling weights and the log-probability.
    shifted_BxV = scaled_BxV - jnp.max(scaled_BxV, axis=-1, keepdims=True)
    weights_BxV = jnp.exp(shifted_BxV)
    log_total_B = jnp.log(jnp.sum(weights_BxV, axis=-1))
    if params.top_k or params.top_p < 1:
        sample_weights_BxV = jnp.where(nucleus_mask(weights_BxV, params), weights_BxV, 0.0)
    else:
        sample_weights_BxV = weights_BxV
    tokens_B = inverse_cdf_sample(u_B, sample_weights_BxV)
    logprobs_B = jnp.take_along_axis(shifted_BxV, tokens_B[:, None], axis=-1)[:, 0] - log_total_B
    return tokens_B, logprobs_B
