r"""The GRPO loss family as pure functions of per-token log-probs ``[B, L]``.

GRPO (DeepSeekMath, arXiv 2402.03300, eq. 3) maximizes, for G outputs ``o_i`` of a question,

    J = 1/G Σ_i 1/|o_i| Σ_t [ min(ρ_it A_i, clip(ρ_it, 1-ε, 1+ε) A_i) - β D_KL(π_θ ‖ π_ref) ]

with ``ρ_it = π_θ(o_it|·) / π_old(o_it|·)`` and the per-token unbiased KL estimator (eq. 4)
``D_KL = π_ref/π_θ - log(π_ref/π_θ) - 1`` ("k3"), added to the loss rather than the reward.
We minimize ``-J``. Variants, all switches of ``LossConfig``:

* asymmetric clipping ``clip(ρ, 1-ε_low, 1+ε_high)`` (DAPO, arXiv 2503.14476, eq. 10);
* dual clip: for ``A < 0`` the per-token loss is at most ``-c·A`` (Ye et al., arXiv 1912.09729);
* sequence-level ratio ``s_i = exp(1/|o_i| Σ_t log ρ_it)`` (GSPO, arXiv 2507.18071), applied per
  token as ``sg[s_i] · π_θ/sg[π_θ]`` so that its value is ``s_i`` and its gradient GSPO's;
* KL estimators k1 ``log(π_θ/π_ref)``, k2 ``½ log²(π_θ/π_ref)``, k3 as above (Schulman, 2020),
  k3's exponential continued linearly beyond ``log π_ref/π_θ = 20`` (see ``kl_penalty``);
* aggregation: "seq-mean-token-mean" (GRPO: mean over sequences of the per-sequence token mean),
  "token-mean" (DAPO: mean over all tokens of the batch), "seq-mean-token-sum-norm" (Dr. GRPO,
  arXiv 2503.20783: each sequence's token sum divided by the constant ``loss_norm_length``, which
  ``RunConfig`` sets to the generation budget ``rollout.max_new_tokens`` unless given);
* truncated importance sampling ``min(π_old/π_sampler, C)`` on the policy-gradient term, for
  rollouts from an inference engine whose numerics differ from the trainer's (with the sequence-
  level ratio, the weight is the sequence's geometric mean too).

Aggregation is expressed as per-token weights (``token_weights``) computed over the whole batch,
so that a minibatch split into microbatches sums to exactly the same loss and gradient.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax.rl.config import LossConfig


def token_weights(mask_BxL, cfg: LossConfig, num_sequences=None):
    """Weights ``w_it`` with ``loss = Σ_it w_it · ℓ_it`` implementing ``cfg.loss_agg``.

    ``num_sequences`` is the number of sequences the mean runs over (default: the rows of
    ``mask``); pass the minibatch's when ``mask`` is one of its microbatches' — the weights must be
    computed for the minibatch as a whole.

    "seq-mean-token-sum-norm" gives ``w_it = m_it / (B · cfg.loss_norm_length)`` and refuses a
    missing length: ``mask``'s width is the step's longest completion rounded up to a bucket, so
    dividing by it would change the normalizer (and the gradient's scale) from step to step.
    """
    mask = mask_BxL.astype(jnp.float32)
    rows = mask.shape[0] if num_sequences is None else num_sequences
    if cfg.loss_agg == "token-mean":
        return mask / jnp.maximum(jnp.sum(mask), 1.0)
    if cfg.loss_agg == "seq-mean-token-sum-norm":
        if cfg.loss_norm_length is None:
            raise ValueError(
                'loss_agg="seq-mean-token-sum-norm" needs grpo.loss.loss_norm_length, a constant '
                "(Dr. GRPO: the generation budget; RunConfig fills it from rollout.max_new_tokens)")
        return mask / (rows * cfg.loss_norm_length)
    lengths_B1 = jnp.sum(mask, axis=1, keepdims=True)
    return mask / jnp.maximum(lengths_B1, 1.0) / rows


K3_LINEAR_FROM = 20.0  # c: k3's exponential becomes its tangent line beyond x = c (e^c ≈ 4.9e8)


def kl_penalty(logp_BxL, ref_logp_BxL, estimator: str):
    """Per-token estimate of ``KL(π_θ ‖ π_ref)`` from samples of π_θ (k1, k2 or k3).

    With ``x = log π_ref/π_θ``: k1 = -x, k2 = ½ x², and k3 (Schulman 2020; DeepSeekMath eq. 4)

        k3 = π_ref/π_θ - log(π_ref/π_θ) - 1 = e^x - x - 1          for x ≤ c,
        k3 = e^c (1 + x - c) - x - 1                                for x > c,

    with ``c = K3_LINEAR_FROM``: beyond c, e^x is replaced by its tangent at c, so k3 stays finite
    in float32 for any x while its value and slope are continuous at c and its slope
    ``dk3/dx = e^c - 1 > 0`` keeps the sign of the exact ``e^x - 1`` (clamping the exponent alone
    would give slope -1 there, rewarding the policy for moving further from the reference).
    """
    log_ratio = ref_logp_BxL - logp_BxL  # x = log π_ref/π_θ
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * jnp.square(log_ratio)
    # One expression for both pieces: e^x for x ≤ c (the second factor is 1), e^c (1 + x - c)
    # beyond. As a product its derivative is e^c on both sides of c, also at x = c exactly, where a
    # jnp.where would take half of jnp.minimum's tie gradient.
    clamped = jnp.minimum(log_ratio, K3_LINEAR_FROM)
    ratio = jnp.exp(clamped) * (1.0 + log_ratio - clamped)  # π_ref/π_θ, linear beyond c
    return ratio - log_ratio - 1.0


def importance_ratio(logp_BxL, old_logp_BxL, mask_BxL, level: str):
    """``ρ_it`` (token level) or GSPO's ``s_i`` broadcast over the sequence's tokens."""
    log_ratio = logp_BxL - old_logp_BxL
    if level == "token":
        return jnp.exp(log_ratio)
    mask = mask_BxL.astype(logp_BxL.dtype)
    seq_log_ratio_B1 = jnp.sum(log_ratio * mask, axis=1, keepdims=True) / jnp.maximum(
        jnp.sum(mask, axis=1, keepdims=True), 1.0)
    seq_ratio_B1 = jnp.exp(seq_log_ratio_B1)
    return jax.lax.stop_gradient(seq_ratio_B1) * jnp.exp(logp_BxL - jax.lax.stop_gradient(logp_BxL))


def policy_loss(ratio_BxL, advantages_B, cfg: LossConfig):
    """Per-token clipped surrogate loss ``-min(ρA, clip(ρ)A)`` (with the optional dual clip) and
    where each clip side is active."""
    adv = advantages_B[:, None].astype(ratio_BxL.dtype)
    unclipped = ratio_BxL * adv
    clipped = jnp.clip(ratio_BxL, 1.0 - cfg.epsilon_low, 1.0 + cfg.epsilon_high) * adv
    loss = -jnp.minimum(unclipped, clipped)
    if cfg.dual_clip is not None:
        loss = jnp.where(adv < 0, jnp.minimum(loss, -cfg.dual_clip * adv), loss)
    clipped_low = (ratio_BxL < 1.0 - cfg.epsilon_low) & (adv < 0)
    clipped_high = (ratio_BxL > 1.0 + cfg.epsilon_high) & (adv > 0)
    return loss, clipped_low, clipped_high


def per_token_loss(logp_BxL, old_logp_BxL, ref_logp_BxL, advantages_B, mask_BxL, cfg: LossConfig,
                   sampler_logp_BxL=None):
    """``ℓ_it = tis_it · pg_it + β · kl_it`` and the pieces needed for metrics."""
    if old_logp_BxL is None:  # on-policy: π_old is the current policy, detached (ρ ≡ 1)
        old_logp_BxL = jax.lax.stop_gradient(logp_BxL)
    ratio = importance_ratio(logp_BxL, old_logp_BxL, mask_BxL, cfg.ratio_level)
    pg, clipped_low, clipped_high = policy_loss(ratio, advantages_B, cfg)
    if cfg.tis_cap is not None and sampler_logp_BxL is not None:
        # The importance weight lives at the ratio's level: per token, or GSPO's sequence mean.
        log_w = importance_ratio(jax.lax.stop_gradient(old_logp_BxL), sampler_logp_BxL, mask_BxL,
                                 cfg.ratio_level)
        pg = pg * jnp.minimum(jax.lax.stop_gradient(log_w), cfg.tis_cap)
    kl = jnp.zeros_like(pg)
    if cfg.beta > 0:
        if ref_logp_BxL is None:
            raise ValueError("beta > 0 needs the reference log-probs")
        kl = kl_penalty(logp_BxL, ref_logp_BxL, cfg.kl_estimator)
    return pg + cfg.beta * kl, dict(pg=pg, kl=kl, ratio=ratio, clipped_low=clipped_low,
                                    clipped_high=clipped_high)


def weighted_loss(logp_BxL, old_logp_BxL, ref_logp_BxL, advantages_B, mask_BxL, weights_BxL,
                  cfg: LossConfig, sampler_logp_BxL=None):
    """``Σ w_it ℓ_it`` with sums for metrics (all additive across microbatches)."""
    loss_BxL, parts = per_token_loss(logp_BxL, old_logp_BxL, ref_logp_BxL, advantages_B,
                                     mask_BxL, cfg, sampler_logp_BxL)
    mask = mask_BxL.astype(jnp.float32)
    sums = dict(
        pg_loss=jnp.sum(weights_BxL * parts["pg"]),
        kl_sum=jnp.sum(mask * parts["kl"]),
        ratio_sum=jnp.sum(mask * parts["ratio"]),
        ratio_min=jnp.min(jnp.where(mask > 0, parts["ratio"], jnp.inf)),
        ratio_max=jnp.max(jnp.where(mask > 0, parts["ratio"], -jnp.inf)),
        clipped_low_sum=jnp.sum(mask * parts["clipped_low"]),
        clipped_high_sum=jnp.sum(mask * parts["clipped_high"]),
        tokens=jnp.sum(mask),
    )
    return jnp.sum(weights_BxL * loss_BxL), sums


def finish_metrics(loss, sums) -> dict:
    """Per-token means from the additive sums of ``weighted_loss``."""
    tokens = jnp.maximum(sums["tokens"], 1.0)
    return dict(
        loss=loss,
        pg_loss=sums["pg_loss"],
        kl=sums["kl_sum"] / tokens,
        ratio_mean=sums["ratio_sum"] / tokens,
        ratio_min=sums["ratio_min"],
        ratio_max=sums["ratio_max"],
        clip_frac_low=sums["clipped_low_sum"] / tokens,
        clip_frac_high=sums["clipped_high_sum"] / tokens,
    )


def grpo_loss(logp_BxL, old_logp_BxL, ref_logp_BxL, advantages_B, mask_BxL, cfg: LossConfig,
              sampler_logp_BxL=None):
    """The aggregated GRPO-family loss of one batch and its metrics.

    ``old_logp_BxL=None`` means on-policy (ρ ≡ 1, gradient ``-A/|o_i|`` per token under the GRPO
    aggregation); ``ref_logp_BxL`` may be None when ``cfg.beta == 0``.
    """
    weights = token_weights(mask_BxL, cfg)
    loss, sums = weighted_loss(logp_BxL, old_logp_BxL, ref_logp_BxL, advantages_B, mask_BxL,
                               weights, cfg, sampler_logp_BxL)
    return loss, finish_metrics(loss, sums)
