"""Mixture-of-experts load balance in a GRPO update: the metrics, and the optional aux loss.

The training forward of a MoE policy returns each MoE layer's ``MoEStats`` (``r1jax.models.moe``).
An update is accumulated over microbatches, so the statistics are carried as additive sums —
per layer and expert, the token-expert assignments ``count_YxX`` and the summed router
probabilities ``prob_YxX`` — and turned into metrics once, over the whole minibatch: the values
equal those of one forward over all its rows, however it is split. Per layer ``y`` with ``N``
real tokens (prompt and completion), ``X`` experts and ``A`` chosen per token:

* ``moe/aux_loss``: the Switch / Qwen3-MoE balancing loss ``X · Σ_x (count_x / N) · prob_x / N``,
  averaged over layers (``A`` when perfectly balanced);
* ``moe/max_over_mean_load``: ``max_x count_x / mean_x count_x`` averaged over layers (1 when
  balanced, ``X / A`` when every token picks the same experts), and its worst layer
  (``moe/max_over_mean_load_worst``);
* ``moe/dead_expert_frac``: the share of (layer, expert) pairs that got no token.

A dense policy has no statistics and none of these keys.
"""
from __future__ import annotations

import jax.numpy as jnp

from r1jax.models.moe import MoEStats

PREFIX = "moe/"


def balance_sums(stats: MoEStats, tokens, experts_per_token: int) -> dict:
    """The additive sums of one forward's statistics; ``tokens`` is its count of real tokens
    (the ``N`` the statistics were normalized by)."""
    tokens = jnp.asarray(tokens, jnp.float32)
    return {
        "moe_count": stats.token_fraction * tokens * experts_per_token,
        "moe_prob_sum": stats.router_prob * tokens,
    }


def balance_metrics(sums: dict, experts_per_token: int) -> dict:
    """``moe/…`` metrics from the summed ``balance_sums`` (module docstring)."""
    count_YxX, prob_YxX = sums["moe_count"], sums["moe_prob_sum"]
    experts = count_YxX.shape[-1]
    tokens_Y = jnp.maximum(count_YxX.sum(-1) / experts_per_token, 1.0)
    aux_Y = experts * jnp.sum(count_YxX * prob_YxX, -1) / tokens_Y ** 2
    load_Y = count_YxX.max(-1) / jnp.maximum(count_YxX.mean(-1), 1e-9)
    return {
        f"{PREFIX}aux_loss": aux_Y.mean(),
        f"{PREFIX}max_over_mean_load": load_Y.mean(),
        f"{PREFIX}max_over_mean_load_worst": load_Y.max(),
        f"{PREFIX}dead_expert_frac": jnp.mean((count_YxX == 0).astype(jnp.float32)),
    }


def aux_loss_term(stats: MoEStats, tokens, total_tokens, coefficient: float):
    """A microbatch's share of ``coefficient × mean-over-layers aux loss``: weighted by its share
    of the minibatch's real tokens, so microbatches sum to the token-weighted mean (each
    microbatch balances its own tokens, as a data-parallel shard would)."""
    share = jnp.asarray(tokens, jnp.float32) / jnp.maximum(total_tokens, 1.0)
    return coefficient * jnp.mean(stats.aux_loss) * share
