"""What both rollout engines share around their compiled loop: every step's uniforms in one draw,
and running the loop on each batch shard of the rows on its own (``shard_map``)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax import models
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
                  max_new_tokens: int, row_outputs: int, scalar_outputs: int, param_specs=None):
    """``run(params, prompt, mask, u, budgets)`` on each batch shard of the prompts and their
    rows: unless ``run`` synchronizes them, the shards decode in parallel and stop on their own.
    The first ``row_outputs`` outputs are per row (laid out like the rows); each later one is a
    scalar per shard, returned stacked ``[shards]`` for the caller to reduce. ``param_specs``
    (default: every parameter whole on every device) lays the parameters out inside."""
    rows = batch_rows_spec(sharding, prompt_PxLp.shape[0])
    greedy = u_TxB is None
    if greedy:  # shard_map takes arrays only; greedy never reads it
        u_TxB = jnp.zeros((max_new_tokens, budgets_B.shape[0]), jnp.float32)

    def local(params, prompt, mask, u, budgets):
        out = run(params, prompt, mask, None if greedy else u, budgets)
        return out[:row_outputs] + tuple(x[None] for x in out[row_outputs:])

    spec = jax.sharding.PartitionSpec
    param_specs = spec() if param_specs is None else param_specs
    return jax.shard_map(
        local, mesh=sharding.mesh, in_specs=(param_specs, rows, rows, spec(None, *rows), rows),
        out_specs=(rows,) * (row_outputs + scalar_outputs), check_vma=False)(
            params, prompt_PxLp, mask_PxLp, u_TxB, budgets_B)


def batch_rows_spec(sharding: Sharding, num_prompts: int):
    """The ``PartitionSpec`` of ``num_prompts`` rows over the mesh's batch axes."""
    return sharding.spec(("batch",), (num_prompts,))


def row_axes(sharding: Sharding, num_prompts: int) -> tuple[str, ...]:
    """The mesh axes ``num_prompts`` rows are split over."""
    spec = batch_rows_spec(sharding, num_prompts)
    axes = spec[0] if spec else None
    return () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)


def expert_param_specs(cfg: models.ModelConfig, sharding: Sharding, params):
    """Inside the rollout's ``shard_map``: each expert's weights on the devices of its
    ``expert`` shard only, as the trainer lays them out (``models.param_shardings``), and every
    other parameter whole; None (everything whole) without an ``expert`` axis or for a tree
    laid out otherwise. The experts are most of a mixture's weights: Qwen3-30B-A3B's 56.9 GiB
    of bf16 weights are 8.6 GiB per device with an expert axis of 8."""
    if sharding.mesh.shape.get("expert", 1) == 1 or not cfg.is_moe:
        return None
    laid_out = models.param_shardings(cfg, sharding)
    if jax.tree.structure(laid_out) != jax.tree.structure(params):
        return None

    def expert_only(named):
        axes = ["expert" if a == "expert" or (isinstance(a, tuple) and "expert" in a) else None
                for a in named.spec]
        while axes and axes[-1] is None:
            axes.pop()
        return jax.sharding.PartitionSpec(*axes)

    return jax.tree.map(expert_only, laid_out)
