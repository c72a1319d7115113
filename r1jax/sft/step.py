"""One SFT optimizer update as a pure function, and its single jitted, sharded instance.

The loss is the weighted next-token cross-entropy over the whole batch,

    loss = -Σ_n w_n · log π(target_n | tokens of its segment before n) / Σ_n w_n,

with ``w`` the loss weights of packed rows (response tokens only for SFT, every token for
pretraining). Log-probs come from ``kernels.token_logprobs`` on the final hidden states, so no
``[tokens × vocab]`` logits exist. The denominator is fixed for the whole batch first, so a batch
split into microbatches (``lax.scan``) sums to exactly the same loss and gradient. A non-finite
loss or gradient norm skips the update and is counted, as in ``r1jax.rl.step.grpo_step``.
"""
from __future__ import annotations

import functools

import flax
import jax
import jax.numpy as jnp
import optax

from r1jax import models
from r1jax.rl import logprobs as rl_logprobs
from r1jax.optim import TrainState, accumulate, guarded_update, learning_rate_schedule, shardings_of
from r1jax.sft.config import SFTConfig
from r1jax.sft.packing import PackedRows
from r1jax.sharding import Sharding, constrain


@flax.struct.dataclass
class SFTBatch:
    """Packed rows on device: inputs, their next-token targets and loss weights, and the segment
    ids and per-segment positions that keep packed examples apart (all ``[B, L]``)."""

    tokens_BxL: jax.Array
    targets_BxL: jax.Array
    loss_weights_BxL: jax.Array
    segment_ids_BxL: jax.Array
    positions_BxL: jax.Array

    @classmethod
    def from_rows(cls, rows: PackedRows) -> "SFTBatch":
        return cls(jnp.asarray(rows.tokens), jnp.asarray(rows.targets),
                   jnp.asarray(rows.loss_weights), jnp.asarray(rows.segment_ids),
                   jnp.asarray(rows.positions))


def _hidden(model_cfg, params, batch: SFTBatch, sharding):
    out = models.forward(model_cfg, params, batch.tokens_BxL,
                         attention_mask_BxL=batch.segment_ids_BxL > 0,
                         positions_BxL=batch.positions_BxL,
                         segment_ids_BxL=batch.segment_ids_BxL, sharding=sharding)
    hidden = constrain(out.hidden_BxLxD, ("batch", "length", "act_embed"), sharding)
    return hidden.reshape(-1, hidden.shape[-1]), out.lm_head_DxV


def token_logprobs(model_cfg: models.ModelConfig, params, batch: SFTBatch, *, impl: str = "auto",
                   sharding: Sharding | None = None) -> jax.Array:
    """``log π(targets_BxL)`` at every position (float32 ``[B, L]``; meaningless where the loss
    weight is 0)."""
    hidden_NxD, lm_head_DxV = _hidden(model_cfg, params, batch, sharding)
    logp_N, _ = rl_logprobs.sharded_token_logprobs(
        hidden_NxD, lm_head_DxV, batch.targets_BxL.reshape(-1), temperature=1.0,
        return_entropy=False, impl=impl, sharding=sharding)
    return logp_N.reshape(batch.tokens_BxL.shape)


def weighted_logprob_sum(model_cfg, params, batch: SFTBatch, *, impl="auto", sharding=None,
                         max_loss_tokens: int | None = None):
    """``(Σ w·logp, tokens dropped)`` over a (micro)batch, scoring only loss-bearing positions
    when ``max_loss_tokens`` bounds how many there are."""
    hidden_NxD, lm_head_DxV = _hidden(model_cfg, params, batch, sharding)
    targets_N = batch.targets_BxL.reshape(-1)
    weights_N = batch.loss_weights_BxL.reshape(-1).astype(jnp.float32)
    dropped = jnp.zeros((), jnp.int32)
    if max_loss_tokens is not None:
        count = jnp.sum(weights_N != 0).astype(jnp.int32)
        (index_K,) = jnp.nonzero(weights_N != 0, size=max_loss_tokens, fill_value=0)
        valid_K = jnp.arange(max_loss_tokens) < count
        hidden_NxD, targets_N = hidden_NxD[index_K], targets_N[index_K]
        weights_N = jnp.where(valid_K, weights_N[index_K], 0.0)
        dropped = jnp.maximum(count - max_loss_tokens, 0)
    logp_N, _ = rl_logprobs.sharded_token_logprobs(
        hidden_NxD, lm_head_DxV, targets_N, temperature=1.0, return_entropy=False, impl=impl,
        sharding=sharding)
    return jnp.sum(weights_N * logp_N), dropped


def sft_step(state: TrainState, batch: SFTBatch, *, cfg: SFTConfig,
             model_cfg: models.ModelConfig, optimizer: optax.GradientTransformation,
             sharding: Sharding | None = None) -> tuple[TrainState, dict]:
    """One optimizer update on ``batch`` (accumulated over ``cfg.num_microbatches``)."""
    total_weight = jnp.maximum(jnp.sum(batch.loss_weights_BxL.astype(jnp.float32)), 1e-8)
    score = functools.partial(weighted_logprob_sum, model_cfg, impl=cfg.logprob_impl,
                              sharding=sharding, max_loss_tokens=cfg.max_loss_tokens)

    def microbatch_loss(params, mb: SFTBatch):
        logp_sum, dropped = score(params, mb)
        return -logp_sum / total_weight, {"dropped_loss_tokens": dropped}

    (loss, sums), grads = accumulate(microbatch_loss, state.params, batch, cfg.num_microbatches)
    new_state, update_metrics = guarded_update(state, grads, loss, optimizer)
    metrics = dict(
        loss=loss,
        **update_metrics,
        loss_tokens=jnp.sum(batch.loss_weights_BxL != 0).astype(jnp.int32),
        dropped_loss_tokens=sums["dropped_loss_tokens"],
        learning_rate=learning_rate_schedule(cfg.optim)(state.step),
    )
    return new_state, metrics


def make_sft_step(cfg: SFTConfig, model_cfg: models.ModelConfig,
                  optimizer: optax.GradientTransformation, state: TrainState,
                  sharding: Sharding | None = None):
    """``sft_step`` jitted once with explicit in/out shardings from ``state`` and the state
    donated. Returns ``step(state, batch) -> (state, metrics)``."""
    step = functools.partial(sft_step, cfg=cfg, model_cfg=model_cfg, optimizer=optimizer,
                             sharding=sharding)
    if sharding is None:
        return jax.jit(step, donate_argnums=(0,))
    state_sh = shardings_of(state)
    compiled: dict = {}

    def call(state, batch):
        key = tuple(x.shape for x in jax.tree.leaves(batch))
        if key not in compiled:
            compiled[key] = jax.jit(step, in_shardings=(state_sh, sharding.rows(batch)),
                                    out_shardings=(state_sh, sharding.replicated()),
                                    donate_argnums=(0,))
        return compiled[key](state, batch)

    return call


@functools.partial(jax.jit, static_argnames=("model_cfg", "impl", "sharding"))
def eval_loss(params, batch: SFTBatch, *, model_cfg, impl="auto", sharding=None):
    """``(Σ w·(-logp), Σ w)`` of a batch without gradients (held-out loss)."""
    logp_sum, _ = weighted_logprob_sum(model_cfg, params, batch, impl=impl, sharding=sharding)
    return -logp_sum, jnp.sum(batch.loss_weights_BxL.astype(jnp.float32))
