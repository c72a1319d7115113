"""One reward-model update: Bradley–Terry loss over preference pairs, microbatched and guarded."""
from __future__ import annotations

import functools

import flax
import jax
import jax.numpy as jnp
import optax

from r1jax import models
from r1jax.optim import TrainState, accumulate, guarded_update
from r1jax.rm.model import bradley_terry_loss, scores
from r1jax.sharding import Sharding


@flax.struct.dataclass
class PairBatch:
    """Left-padded ``prompt ⊕ response`` for each pair: ``[P, 2, L]``, chosen first."""

    tokens_Px2xL: jax.Array
    attention_mask_Px2xL: jax.Array


def pair_scores(model_cfg, params, batch: PairBatch, sharding=None):
    pairs, _, length = batch.tokens_Px2xL.shape
    flat = scores(model_cfg, params, batch.tokens_Px2xL.reshape(2 * pairs, length),
                  batch.attention_mask_Px2xL.reshape(2 * pairs, length), sharding)
    flat = flat.reshape(pairs, 2)
    return flat[:, 0], flat[:, 1]


def rm_step(state: TrainState, batch: PairBatch, *, model_cfg: models.ModelConfig,
            optimizer: optax.GradientTransformation, num_microbatches: int = 1,
            sharding: Sharding | None = None) -> tuple[TrainState, dict]:
    total_pairs = batch.tokens_Px2xL.shape[0]

    def loss_fn(params, mb: PairBatch):
        chosen, rejected = pair_scores(model_cfg, params, mb, sharding)
        margin = chosen - rejected
        # Summed per microbatch and divided by the whole batch's pairs: microbatches add up.
        loss = jnp.sum(jax.nn.softplus(-margin)) / total_pairs
        return loss, {"correct": jnp.sum((margin > 0).astype(jnp.float32)),
                      "margin": jnp.sum(margin)}

    (loss, sums), grads = accumulate(loss_fn, state.params, batch, num_microbatches)
    state, update = guarded_update(state, grads, loss, optimizer)
    return state, {"loss": loss, "accuracy": sums["correct"] / total_pairs,
                   "margin": sums["margin"] / total_pairs, **update}


def make_rm_step(model_cfg, optimizer, num_microbatches=1, sharding=None):
    return jax.jit(functools.partial(rm_step, model_cfg=model_cfg, optimizer=optimizer,
                                     num_microbatches=num_microbatches, sharding=sharding),
                   donate_argnums=(0,))


@functools.partial(jax.jit, static_argnames=("model_cfg", "sharding"))
def eval_pairs(params, batch: PairBatch, *, model_cfg, sharding=None):
    """Loss and ranking accuracy on held-out pairs."""
    return bradley_terry_loss(*pair_scores(model_cfg, params, batch, sharding))
