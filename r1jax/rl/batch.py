"""From a scored rollout to the update's batch: group-relative advantages, then prompt and
completion side by side.

A sample that could not be judged (reward NaN) is invalid: it gets advantage 0 and its group's
statistics leave it out.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import kernels
from r1jax.rl.step import GRPOBatch
from r1jax.rollout import Rollout


def advantages(rewards_PxG: np.ndarray, mode: str, eps: float) -> kernels.GroupedAdvantages:
    """Group-relative advantages (``kernels.grouped_advantages``); NaN rewards are invalid."""
    rewards = jnp.asarray(np.nan_to_num(rewards_PxG, nan=0.0), jnp.float32)
    valid = jnp.asarray(~np.isnan(rewards_PxG))
    return kernels.grouped_advantages(rewards, valid, mode=mode, eps=eps)


def completion_bucket(longest: int, budget: int, quantum: int = 16) -> int:
    """Columns of completion kept for the update: the longest completion rounded up to a multiple
    of ``quantum`` (so a run compiles a few shapes), at most the budget."""
    return min(budget, max(quantum, -(-longest // quantum) * quantum))


def make_batch(rollout: Rollout, advantages_B, *, columns: int, sampler_logprobs: bool = False,
               router_replay: bool = False) -> GRPOBatch:
    """Prompt and completion side by side, ``[P·G, Lp + T]``, keeping ``columns`` completion
    columns (everything after them is padding); with ``router_replay``, the rollout's expert
    choices laid out the same way (``GRPOBatch.experts_BxLxYxA``)."""
    experts = (None, None)
    if router_replay:
        if rollout.experts is None:
            raise ValueError("router_replay needs a rollout that recorded its expert choices "
                             "(generate(record_experts=True))")
        experts = (rollout.prompt_experts, rollout.experts)
    return _make_batch(rollout.prompt_tokens, rollout.prompt_mask, rollout.tokens, rollout.mask,
                       rollout.logprobs if sampler_logprobs else None,
                       jnp.asarray(advantages_B, jnp.float32), *experts,
                       group=rollout.group_size, columns=columns)


# Jitted as one program: op by op from the host, it was ~0.6 ms of dispatch per step.
@functools.partial(jax.jit, static_argnames=("group", "columns"))
def _make_batch(prompt_PxLp, prompt_mask_PxLp, tokens_BxT, mask_BxT, logprobs_BxT, advantages,
                prompt_experts_PxLpxYxA=None, experts_BxTxYxA=None, *, group: int,
                columns: int) -> GRPOBatch:
    experts_BxLxYxA = None
    if experts_BxTxYxA is not None:
        experts_BxLxYxA = jnp.concatenate([jnp.repeat(prompt_experts_PxLpxYxA, group, axis=0),
                                           experts_BxTxYxA[:, :columns]], axis=1)
    prompts = jnp.repeat(prompt_PxLp, group, axis=0)
    prompt_mask = jnp.repeat(prompt_mask_PxLp, group, axis=0)
    completion = tokens_BxT[:, :columns]
    completion_mask = mask_BxT[:, :columns].astype(jnp.int32)
    return GRPOBatch(
        tokens_BxL=jnp.concatenate([prompts, completion], axis=1).astype(jnp.int32),
        attention_mask_BxL=jnp.concatenate([prompt_mask.astype(jnp.int32), completion_mask],
                                           axis=1),
        completion_mask_BxT=completion_mask,
        advantages_B=advantages.reshape(-1),
        sampler_logp_BxT=None if logprobs_BxT is None else logprobs_BxT[:, :columns],
        experts_BxLxYxA=experts_BxLxYxA,
    )
