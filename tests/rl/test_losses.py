"""GRPO losses against an independent float64 NumPy implementation, finite differences, invariants."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernels
from r1jax.configdict import from_config
from r1jax.rl import LossConfig, grpo_loss, kl_penalty, token_weights
from r1jax.rl import losses
from r1jax.rl.run_config import RunConfig

B, L = 6, 7


def np_loss(logp, old, ref, adv, mask, cfg: LossConfig, sampler=None):
    """Written from the papers' equations, loop by loop, in float64."""
    logp, old, ref, adv, mask = (np.asarray(x, np.float64) for x in (logp, old, ref, adv, mask))
    per_token = np.zeros_like(logp)
    for i in range(B):
        n_i = mask[i].sum()
        seq_log_ratio = ((logp[i] - old[i]) * mask[i]).sum() / max(n_i, 1)
        for t in range(L):
            if cfg.ratio_level == "token":
                ratio = np.exp(logp[i, t] - old[i, t])
            else:  # GSPO: the sequence's geometric-mean ratio on every token
                ratio = np.exp(seq_log_ratio)
            a = adv[i]
            surrogate = min(ratio * a, np.clip(ratio, 1 - cfg.epsilon_low, 1 + cfg.epsilon_high) * a)
            pg = -surrogate
            if cfg.dual_clip is not None and a < 0:
                pg = min(pg, -cfg.dual_clip * a)
            if cfg.tis_cap is not None:
                if cfg.ratio_level == "token":
                    weight = np.exp(old[i, t] - sampler[i, t])
                else:
                    weight = np.exp(((old[i] - sampler[i]) * mask[i]).sum() / max(n_i, 1))
                pg *= min(weight, cfg.tis_cap)
            x = ref[i, t] - logp[i, t]  # log pi_ref / pi
            kl = {"k1": -x, "k2": 0.5 * x * x, "k3": np.exp(x) - x - 1}[cfg.kl_estimator]
            per_token[i, t] = pg + cfg.beta * kl
    if cfg.loss_agg == "seq-mean-token-mean":
        rows = [(per_token[i] * mask[i]).sum() / mask[i].sum() for i in range(B) if mask[i].sum()]
        return sum(rows) / B
    if cfg.loss_agg == "token-mean":
        return (per_token * mask).sum() / mask.sum()
    return (per_token * mask).sum() / (B * cfg.loss_norm_length)  # Dr. GRPO: a constant


def random_inputs(seed):
    rng = np.random.default_rng(seed)
    logp = -rng.uniform(0.05, 3.0, (B, L))
    old = logp + rng.normal(0, 0.3, (B, L))  # ratios spread over both clip boundaries
    ref = logp + rng.normal(0, 0.5, (B, L))
    sampler = old + rng.normal(0, 0.4, (B, L))
    adv = rng.normal(0, 1, B)
    lengths = rng.integers(1, L + 1, B)
    mask = (np.arange(L)[None] < lengths[:, None]).astype(np.float64)
    mask[2, 3] = 0.0  # a hole inside a completion
    return logp, old, ref, adv, mask, sampler


NORM_LENGTH = 10  # Dr. GRPO's constant, unequal to the batch width L so that using L would show

VARIANTS = [
    dict(epsilon_low=el, epsilon_high=eh, dual_clip=dc, beta=beta, kl_estimator=kl, loss_agg=agg,
         ratio_level=level, tis_cap=tis,
         loss_norm_length=NORM_LENGTH if agg == "seq-mean-token-sum-norm" else None)
    for (el, eh), dc, beta, kl, agg, level, tis in itertools.product(
        [(0.2, 0.2), (0.2, 0.28)], [None, 3.0], [0.0, 0.04], ["k1", "k2", "k3"],
        ["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"], ["token", "sequence"],
        [None, 2.0])
    if not (beta == 0.0 and kl != "k3")  # the estimator is irrelevant without the penalty
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_loss_equals_float64_reference(variant):
    cfg = LossConfig(**variant)
    logp, old, ref, adv, mask, sampler = random_inputs(len(str(variant)))
    args = [jnp.asarray(x, jnp.float32) for x in (logp, old, ref, adv, mask, sampler)]
    ours, metrics = grpo_loss(*args[:5], cfg, sampler_logp_BxL=args[5])
    expected = np_loss(logp, old, ref, adv, mask, cfg, sampler)
    assert abs(float(ours) - expected) <= 1e-6 * max(1.0, abs(expected))
    assert float(metrics["loss"]) == float(ours)


GRAD_VARIANTS = [v for i, v in enumerate(VARIANTS) if i % 7 == 0]


@pytest.mark.parametrize("variant", GRAD_VARIANTS,
                         ids=lambda v: "-".join(str(x) for x in v.values()))
def test_gradient_matches_finite_differences(variant):
    cfg = LossConfig(**variant)
    logp, old, ref, adv, mask, sampler = random_inputs(7)
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    grad = jax.grad(lambda lp: grpo_loss(lp, f32(old), f32(ref), f32(adv), f32(mask), cfg,
                                         sampler_logp_BxL=f32(sampler))[0])(f32(logp))
    h = 1e-6
    numeric = np.zeros_like(logp)
    for i, t in itertools.product(range(B), range(L)):
        up, down = logp.copy(), logp.copy()
        up[i, t] += h
        down[i, t] -= h
        numeric[i, t] = (np_loss(up, old, ref, adv, mask, cfg, sampler)
                         - np_loss(down, old, ref, adv, mask, cfg, sampler)) / (2 * h)
    np.testing.assert_allclose(np.asarray(grad), numeric, atol=2e-5)


def test_on_policy_without_kl_has_zero_loss_and_gradient_minus_a_over_length():
    """μ = 1: ratio ≡ 1, so with β = 0 the loss is -mean(A) = 0 for group-normalized advantages,
    while each token's gradient is -A_i / |o_i| (per sequence, averaged over the B sequences)."""
    logp, _, _, _, mask, _ = random_inputs(3)
    rewards = np.random.default_rng(3).normal(size=(2, 3))
    adv = kernels.grouped_advantages(jnp.asarray(rewards, jnp.float32),
                                     jnp.ones((2, 3), bool)).advantages_PxG.reshape(-1)
    cfg = LossConfig(beta=0.0)
    loss, grad = jax.value_and_grad(
        lambda lp: grpo_loss(lp, None, None, adv, jnp.asarray(mask), cfg)[0])(jnp.asarray(logp))
    assert abs(float(loss)) < 1e-6
    lengths = mask.sum(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(grad) * B, -np.asarray(adv)[:, None] / lengths * mask,
                               atol=1e-6)


def test_zero_variance_groups_contribute_no_policy_gradient():
    logp, old, _, _, mask, _ = random_inputs(5)
    rewards = jnp.asarray([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])  # group 0: all equal
    result = kernels.grouped_advantages(rewards, jnp.ones((2, 3), bool))
    assert int(result.zero_std_P.sum()) == 1
    adv = result.advantages_PxG.reshape(-1)
    for agg in ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"):
        cfg = LossConfig(beta=0.0, loss_agg=agg, loss_norm_length=NORM_LENGTH)
        grad = jax.grad(lambda lp: grpo_loss(lp, jnp.asarray(old), None, adv, jnp.asarray(mask),
                                             cfg)[0])(jnp.asarray(logp, jnp.float32))
        assert np.all(np.asarray(grad)[:3] == 0) and np.any(np.asarray(grad)[3:] != 0)


def test_kl_estimators_are_unbiased_or_as_documented():
    """E_{x~π}[k1] = E[k3] = KL(π‖π_ref) on a small categorical, by exact expectation."""
    p = np.array([0.5, 0.3, 0.2])
    q = np.array([0.2, 0.5, 0.3])
    kl = float(np.sum(p * np.log(p / q)))
    logp, logq = jnp.log(jnp.asarray(p))[None], jnp.log(jnp.asarray(q))[None]
    for est in ("k1", "k3"):
        assert abs(float(jnp.sum(jnp.asarray(p) * kl_penalty(logp, logq, est)[0])) - kl) < 1e-6
    assert float(jnp.min(kl_penalty(logp, logq, "k3"))) >= 0


def test_bad_loss_config_names_the_field():
    with pytest.raises(ValueError, match="kl_estimator 'k4'"):
        LossConfig(kl_estimator="k4")
    with pytest.raises(ValueError, match="loss_agg"):
        LossConfig(loss_agg="mean")
    with pytest.raises(ValueError, match="dual_clip"):
        LossConfig(dual_clip=0.5)
    with pytest.raises(ValueError, match="beta > 0 needs the reference"):
        grpo_loss(jnp.zeros((1, 2)), None, None, jnp.zeros(1), jnp.ones((1, 2)), LossConfig())


def _k3_inputs(x):
    """``(logp, ref_logp)`` in float32 with ``ref - logp = x`` and both log-probs <= 0."""
    x = np.asarray(x, np.float64)
    logp = -1.0 - np.maximum(x, 0.0)
    return jnp.asarray(logp, jnp.float32), jnp.asarray(logp + x, jnp.float32)


def test_k3_is_exact_below_the_linear_piece_and_its_gradient_keeps_its_sign_beyond():
    """k3 = e^x - x - 1 with x = log π_ref/π_θ (float64 reference) up to the clamp; beyond it the
    value stays finite and dk3/dlogp = -(dk3/dx) stays negative, as the exact -(e^x - 1)."""
    c = losses.K3_LINEAR_FROM
    assert c == 20.0  # the points below straddle it
    k3 = lambda lp, ref: jnp.sum(kl_penalty(lp, ref, "k3"))  # noqa: E731
    beyond = np.array([21.0, 25.0, 40.0, 100.0])
    logp, ref = _k3_inputs(beyond)
    grad = np.asarray(jax.grad(k3)(logp, ref))
    assert np.all(np.isfinite(grad)) and np.all(grad < 0), grad
    # The slope is continuous at the clamp: e^c - 1 (in x) on the linear piece.
    np.testing.assert_allclose(grad, -np.expm1(c), rtol=1e-5)
    value = np.asarray(kl_penalty(logp, ref, "k3"))
    assert np.all(np.isfinite(value)) and np.all(np.diff(value) > 0), value  # still increasing
    logp, ref = _k3_inputs([1000.0])
    assert np.isfinite(float(kl_penalty(logp, ref, "k3")[0]))

    below = np.array([-30.0, -5.0, -1.0, -0.1, 0.0, 0.1, 1.0, 5.0, 10.0, 19.5, c])
    logp, ref = _k3_inputs(below)
    x = np.asarray(ref, np.float64) - np.asarray(logp, np.float64)
    np.testing.assert_allclose(np.asarray(kl_penalty(logp, ref, "k3")), np.expm1(x) - x,
                               rtol=1e-5, atol=1e-6)
    # x = c included: the slope there is e^c - 1 too, not half of it from jnp.minimum's tie.
    np.testing.assert_allclose(np.asarray(jax.grad(k3)(logp, ref)), -np.expm1(x), rtol=1e-5,
                               atol=1e-6)
    # Value continuous at the clamp: just below and just above agree to first order.
    logp, ref = _k3_inputs([c - 1e-3, c + 1e-3])
    lo, hi = np.asarray(kl_penalty(logp, ref, "k3"), np.float64)
    assert abs(hi - lo - 2e-3 * np.expm1(c)) <= 1e-4 * hi


def _dr_grpo_loss_config(max_new_tokens):
    """The LossConfig a Dr. GRPO run trains with: the loss section left at its defaults except the
    aggregation, resolved by ``RunConfig`` as ``r1jax.rl.trainer`` receives it."""
    run = from_config(RunConfig, dict(
        job="grpo", steps=1, prompts_per_step=2, model=dict(checkpoint="/m"),
        rollout=dict(max_new_tokens=max_new_tokens),
        grpo=dict(group_size=2, advantage_mode="dr_grpo",
                  loss=dict(beta=0.04, loss_agg="seq-mean-token-sum-norm"))))
    return run.grpo.loss


def test_dr_grpo_normalizer_does_not_depend_on_the_batch_width():
    """The update keeps ``completion_bucket`` columns: the step's longest completion rounded up to
    16. The same completions padded to 16 or 48 columns must get the same per-token weights, loss
    and gradient — Dr. GRPO's divisor is the budget, not the width."""
    budget = 64
    cfg = _dr_grpo_loss_config(budget)
    rng = np.random.default_rng(0)
    lengths = np.array([3, 16, 9, 1])
    mask = (np.arange(48)[None] < lengths[:, None]).astype(np.float32)
    # Padding columns hold garbage: it must not matter.
    logp = -rng.uniform(0.05, 3.0, (4, 48)).astype(np.float32)
    old = (logp + rng.normal(0, 0.3, (4, 48))).astype(np.float32)
    ref = (logp + rng.normal(0, 0.5, (4, 48))).astype(np.float32)
    adv = jnp.asarray(rng.normal(0, 1, 4), jnp.float32)

    def at_width(width):
        cut = [jnp.asarray(a[:, :width]) for a in (logp, old, ref, mask)]
        weights = token_weights(cut[3], cfg)
        loss, grad = jax.value_and_grad(
            lambda lp: grpo_loss(lp, cut[1], cut[2], adv, cut[3], cfg)[0])(cut[0])
        return np.asarray(weights), float(loss), np.asarray(grad)

    w16, loss16, grad16 = at_width(16)
    w48, loss48, grad48 = at_width(48)
    np.testing.assert_array_equal(w48[:, :16], w16)
    assert not np.any(w48[:, 16:])
    np.testing.assert_allclose(w16, mask[:, :16] / (4 * budget), rtol=1e-6)
    assert loss48 == pytest.approx(loss16, rel=1e-6)
    np.testing.assert_allclose(grad48[:, :16], grad16, rtol=1e-6, atol=1e-9)
    assert not np.any(grad48[:, 16:])


def test_dr_grpo_without_a_normalizer_is_refused():
    cfg = LossConfig(loss_agg="seq-mean-token-sum-norm")
    with pytest.raises(ValueError, match="grpo.loss.loss_norm_length"):
        token_weights(jnp.ones((2, 16)), cfg)
