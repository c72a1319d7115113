"""One GRPO optimizer update as a pure function, and its single jitted, sharded instance.

``grpo_step(state, batch, ref_params, ...)`` computes the loss of a minibatch as the sum of its
microbatches' contributions (the per-token aggregation weights are fixed for the whole minibatch
first), accumulates float32 gradients with ``lax.scan``, clips, and applies AdamW — unless the loss
or the gradient norm is not finite, in which case the update is skipped and counted.
"""
from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from r1jax import models
from r1jax.optim import TrainState, accumulate, guarded_update, shardings_of
from r1jax.rl import losses, moe_balance
from r1jax.rl.config import GRPOConfig
from r1jax.rl.logprobs import completion_forward, completion_logprobs
from r1jax.sharding import Sharding


@flax.struct.dataclass
class GRPOBatch:
    """A minibatch of scored completions (row ``p·G + g``).

    ``tokens_BxL``/``attention_mask_BxL``: left-padded prompt then completion (``L = Lp + T``);
    ``completion_mask_BxT``: the completion tokens that count; ``advantages_B``; optional
    per-token log-probs ``[B, T]`` of the old policy, the reference and the sampler; and, for
    router replay, the sampler's expert choices ``experts_BxLxYxA`` aligned with ``tokens_BxL``
    (``r1jax.rollout.router_replay``), which every forward of the batch then takes.
    """

    tokens_BxL: jax.Array
    attention_mask_BxL: jax.Array
    completion_mask_BxT: jax.Array
    advantages_B: jax.Array
    old_logp_BxT: jax.Array | None = None
    ref_logp_BxT: jax.Array | None = None
    sampler_logp_BxT: jax.Array | None = None
    experts_BxLxYxA: jax.Array | None = None

    @property
    def completion_length(self) -> int:
        return self.completion_mask_BxT.shape[1]

    def rows(self, start: int, stop: int) -> "GRPOBatch":
        return jax.tree.map(lambda x: x[start:stop], self)


def grpo_step(state: TrainState, batch: GRPOBatch, ref_params: Any, *, cfg: GRPOConfig,
              model_cfg: models.ModelConfig, optimizer: optax.GradientTransformation,
              sharding: Sharding | None = None) -> tuple[TrainState, dict]:
    """One optimizer update on ``batch``.

    Reference log-probs come from ``batch.ref_logp_BxT`` if given, else from a forward with
    ``ref_params`` (skipped entirely when ``cfg.loss.beta == 0``). Old-policy log-probs come from
    ``batch.old_logp_BxT``; without them the update is on-policy (ratio ≡ 1). A mixture-of-
    experts policy adds its load-balance metrics (``r1jax.rl.moe_balance``) and, with
    ``cfg.loss.moe_aux_coef > 0``, that coefficient times its balancing loss to the loss. A batch
    with ``experts_BxLxYxA`` (``cfg.router_replay``) replays them in every forward, and the
    metrics and aux loss are those of the replayed routing.
    """
    loss_cfg = cfg.loss
    num_sequences = batch.tokens_BxL.shape[0]
    weights_BxT = losses.token_weights(batch.completion_mask_BxT, loss_cfg)
    forward = functools.partial(completion_forward, model_cfg,
                                completion_length=batch.completion_length,
                                temperature=cfg.temperature, impl=cfg.logprob_impl,
                                sharding=sharding)
    need_ref = loss_cfg.beta > 0 and batch.ref_logp_BxT is None
    if need_ref and ref_params is None:
        raise ValueError("beta > 0 needs ref_params or batch.ref_logp_BxT")
    if loss_cfg.moe_aux_coef > 0 and not model_cfg.is_moe:
        raise ValueError("grpo.loss.moe_aux_coef > 0 needs a mixture-of-experts policy; set it "
                         "to 0 for a dense model")
    if cfg.router_replay and not model_cfg.is_moe:
        raise ValueError("grpo.router_replay needs a mixture-of-experts policy; set "
                         "grpo.router_replay=False for a dense model")
    if cfg.router_replay and batch.experts_BxLxYxA is None:
        raise ValueError("grpo.router_replay needs the batch's expert choices "
                         "(batch.make_batch(..., router_replay=True) of a recording rollout)")
    experts_per_token = model_cfg.num_experts_per_tok
    # The real tokens the training forward sees (prompt + completion[:-1]): what MoE statistics
    # are normalized by, here for the whole minibatch.
    forward_tokens = jnp.sum(batch.attention_mask_BxL[:, :-1].astype(jnp.float32))

    def microbatch_loss(params, mb: GRPOBatch, weights):
        logp, entropy, moe_stats = forward(params, mb.tokens_BxL, mb.attention_mask_BxL,
                                           return_entropy=True, experts_BxLxYxA=mb.experts_BxLxYxA)
        ref_logp = mb.ref_logp_BxT
        if need_ref:
            ref_logp = jax.lax.stop_gradient(forward(ref_params, mb.tokens_BxL,
                                                     mb.attention_mask_BxL,
                                                     experts_BxLxYxA=mb.experts_BxLxYxA)[0])
        loss, sums = losses.weighted_loss(logp, mb.old_logp_BxT, ref_logp, mb.advantages_B,
                                          mb.completion_mask_BxT, weights, loss_cfg,
                                          mb.sampler_logp_BxT)
        mask = mb.completion_mask_BxT.astype(jnp.float32)
        sums["entropy_sum"] = jnp.sum(mask * entropy)
        if moe_stats is not None:
            tokens = jnp.sum(mb.attention_mask_BxL[:, :-1].astype(jnp.float32))
            sums.update(moe_balance.balance_sums(jax.lax.stop_gradient(moe_stats), tokens,
                                                 experts_per_token))
            if loss_cfg.moe_aux_coef > 0:
                loss = loss + moe_balance.aux_loss_term(moe_stats, tokens, forward_tokens,
                                                        loss_cfg.moe_aux_coef)
        return loss, sums

    (loss, sums), grads = accumulate(lambda p, mb: microbatch_loss(p, *mb), state.params,
                                     (batch, weights_BxT), cfg.num_microbatches)
    new_state, update_metrics = guarded_update(state, grads, loss, optimizer)
    metrics = losses.finish_metrics(loss, sums)
    if "moe_count" in sums:
        metrics.update(moe_balance.balance_metrics(sums, experts_per_token))
    metrics.update(
        entropy=sums["entropy_sum"] / jnp.maximum(sums["tokens"], 1.0),
        num_sequences=jnp.asarray(num_sequences, jnp.int32),
        **update_metrics,
    )
    return new_state, metrics


def make_grpo_step(cfg: GRPOConfig, model_cfg: models.ModelConfig,
                   optimizer: optax.GradientTransformation, state: TrainState,
                   sharding: Sharding | None = None):
    """``grpo_step`` jitted once: explicit in/out shardings from ``state``, the state donated (the
    reference parameters never are). Returns ``step(state, batch, ref_params) -> (state, metrics)``.
    """
    step = functools.partial(grpo_step, cfg=cfg, model_cfg=model_cfg, optimizer=optimizer,
                             sharding=sharding)
    if sharding is None:
        return jax.jit(step, donate_argnums=(0,))
    state_sh = shardings_of(state)
    param_sh = models.param_shardings(model_cfg, sharding)
    compiled: dict = {}

    def call(state, batch, ref_params):
        # Batch shardings depend on which optional fields are present and on shapes.
        key = (jax.tree.structure(batch), tuple(x.shape for x in jax.tree.leaves(batch)),
               ref_params is None)
        if key not in compiled:
            batch_sh = sharding.rows(batch)
            compiled[key] = (batch_sh, jax.jit(
                step,
                in_shardings=(state_sh, batch_sh, None if ref_params is None else param_sh),
                out_shardings=(state_sh, sharding.replicated()),
                donate_argnums=(0,)))
        batch_sh, fn = compiled[key]
        # Rollout outputs arrive in the sampler's layout; rows move to the trainer's.
        return fn(state, jax.device_put(batch, batch_sh), ref_params)

    return call


@functools.partial(jax.jit, static_argnames=("model_cfg", "completion_length", "temperature",
                                             "impl", "sharding"))
def rollout_logprobs(params, tokens_BxL, attention_mask_BxL, *, model_cfg, completion_length,
                     temperature, impl="auto", sharding=None, experts_BxLxYxA=None):
    """Per-token log-probs of a rollout's completions under ``params`` (old policy or reference),
    computed once per rollout, without gradients; ``experts_BxLxYxA`` replays a routing."""
    return completion_logprobs(model_cfg, params, tokens_BxL, attention_mask_BxL,
                               completion_length, temperature=temperature, impl=impl,
                               sharding=sharding, experts_BxLxYxA=experts_BxLxYxA)[0]
