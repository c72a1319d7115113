"""What both rollout engines share around their compiled loop: every step's uniforms in one draw,
and running the loop on each batch shard of the rows on its own (``shard_map``)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax.rollout.sampling import SamplingParams
from r1jax.sharding import Sharding


def step_uniforms(rng, sampling: SamplingParams, max_new_tokens: int, batch: int):
    """``u[t, b]``, the uniform sample b's token t is drawn with (``sample_with_uniform``), for
    every step in one random-bits call (not one per step, each a loop of its own on CPU); None
    if greedy. Both engines read the same table, so a sample's tokens do not depend on which
    engine, slot or step produced them."""
    if sampling.greedy:
        return None
    return jax.random.uniform(rng, (max_new_tokens, batch), jnp.float32)


def on_each_shard(run, sharding: Sharding, params, prompt_PxLp, mask_PxLp, budgets_B, u_TxB, *,
                  max_new_tokens: int, row_outputs: int, scalar_outputs: int):
    """``run(params, prompt, mask, u, budgets)`` on each batch shard of the prompts and their
    rows: no step synchronizes the shards, which decode in parallel and stop on their own. The
    first ``row_outputs`` outputs are per row (laid out like the rows); each later one is a
    scalar per shard, returned stacked ``[shards]`` for the caller to reduce."""
    rows = sharding.spec(("batch",), (prompt_PxLp.shape[0],))
    greedy = u_TxB is None
    if greedy:  # shard_map takes arrays only; greedy never reads it
        u_TxB = jnp.zeros((max_new_tokens, budgets_B.shape[0]), jnp.float32)

    def local(params, prompt, mask, u, budgets):
        out = run(params, prompt, mask, None if greedy else u, budgets)
        return out[:row_outputs] + tuple(x[None] for x in out[row_outputs:])

    spec = jax.sharding.PartitionSpec
    return jax.shard_map(
        local, mesh=sharding.mesh, in_specs=(spec(), rows, rows, spec(None, *rows), rows),
        out_specs=(rows,) * (row_outputs + scalar_outputs), check_vma=False)(params, prompt_PxLp, mask_PxLp, u_TxB,
                                                         budgets_B)
