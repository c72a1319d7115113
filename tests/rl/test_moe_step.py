"""GRPO on a mixture of experts: the load-balance metrics equal the forward's statistics (however
the minibatch is split), dense policies get none, and the optional aux loss enters the loss.
(Expert parallelism itself is tested in tests/test_moe.py, and compiled for a TPU mesh with an
expert axis in tests/test_aot.py.)"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import models
from r1jax.rl import (GRPOBatch, GRPOConfig, LossConfig, OptimConfig, init_train_state,
                      make_grpo_step, make_optimizer)
from r1jax.rl.moe_balance import PREFIX

DENSE = models.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                           num_heads=4, num_kv_heads=2, head_dim=8, model_type="qwen2",
                           qkv_bias=True, tie_embeddings=True)
# Qwen3-MoE-shaped, as small as the dense test model: 4 experts, top-2, the first layer dense.
MOE = models.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=3,
                         num_heads=4, num_kv_heads=2, head_dim=8, model_type="qwen3_moe",
                         qk_norm=True, tie_embeddings=True, n_routed_experts=4,
                         num_experts_per_tok=2, moe_intermediate_size=16, norm_topk_prob=True,
                         first_k_dense_replace=1)
PROMPT, COMPLETION, ROWS = 5, 6, 8


def make_batch(seed):
    """Left-padded prompts (every third row), completions of random lengths."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, MOE.vocab_size, (ROWS, PROMPT + COMPLETION)).astype(np.int32)
    mask = np.ones_like(tokens)
    mask[::3, :2] = 0
    lengths = rng.integers(2, COMPLETION + 1, ROWS)
    completion_mask = (np.arange(COMPLETION)[None] < lengths[:, None]).astype(np.int32)
    mask[:, PROMPT:] = completion_mask
    adv = rng.normal(size=ROWS).astype(np.float32)
    return GRPOBatch(jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(completion_mask),
                     jnp.asarray(adv))


def _step(model_cfg, cfg, batch):
    params = jax.jit(lambda r: models.init(model_cfg, r))(jax.random.key(0))
    optimizer = make_optimizer(cfg.optim)
    state = init_train_state(params, optimizer)
    state, metrics = make_grpo_step(cfg, model_cfg, optimizer, state)(state, batch, None)
    return params, state, jax.tree.map(float, metrics)


def _grpo(microbatches=1, coef=0.0):
    return GRPOConfig(loss=LossConfig(beta=0.0, moe_aux_coef=coef),
                      optim=OptimConfig(learning_rate=1e-2), num_microbatches=microbatches)


def test_metrics_are_the_training_forwards_statistics_for_any_microbatching():
    batch = make_batch(0)
    params, _, m = _step(MOE, _grpo(), batch)
    # The forward the update runs: prompt + completion[:-1], padding left out of the statistics.
    stats = models.forward(MOE, params, batch.tokens_BxL[:, :-1],
                           attention_mask_BxL=batch.attention_mask_BxL[:, :-1]).moe_stats
    assert stats.aux_loss.shape == (MOE.num_moe_layers,)
    load = np.asarray(stats.max_over_mean_load)
    assert m[PREFIX + "aux_loss"] == pytest.approx(float(np.mean(stats.aux_loss)), rel=1e-5)
    assert m[PREFIX + "max_over_mean_load"] == pytest.approx(float(load.mean()), rel=1e-5)
    assert m[PREFIX + "max_over_mean_load_worst"] == pytest.approx(float(load.max()), rel=1e-5)
    dead = float(np.mean(np.asarray(stats.token_fraction) == 0))
    assert m[PREFIX + "dead_expert_frac"] == pytest.approx(dead)
    # Split into microbatches, the statistics are still those of the whole minibatch.
    _, _, split = _step(MOE, _grpo(microbatches=4), batch)
    for key in m:
        if key.startswith(PREFIX):
            assert split[key] == pytest.approx(m[key], rel=1e-5), key
    assert m["loss"] == pytest.approx(split["loss"], rel=1e-4, abs=1e-6)


def test_dense_policies_have_no_moe_metrics_and_refuse_the_aux_loss():
    _, _, m = _step(DENSE, _grpo(), make_batch(0))
    assert not [key for key in m if key.startswith(PREFIX)]
    with pytest.raises(ValueError, match="moe_aux_coef > 0 needs a mixture-of-experts policy"):
        _step(DENSE, _grpo(coef=0.01), make_batch(0))
    with pytest.raises(ValueError, match="moe_aux_coef must be >= 0"):
        LossConfig(moe_aux_coef=-0.1)


def test_aux_loss_coefficient_adds_the_balancing_loss_and_its_gradient():
    batch = make_batch(1)
    _, plain_state, plain = _step(MOE, _grpo(), batch)
    coef = 0.5
    _, aux_state, aux = _step(MOE, _grpo(coef=coef), batch)
    # The metrics are the statistics before the update, so the same in both runs.
    assert aux[PREFIX + "aux_loss"] == pytest.approx(plain[PREFIX + "aux_loss"], rel=1e-6)
    assert aux["loss"] == pytest.approx(plain["loss"] + coef * plain[PREFIX + "aux_loss"],
                                        rel=1e-5)
    # Only the router gets the balancing gradient; microbatches sum to the same loss.
    def router(state):
        return np.asarray(state.params["layers"]["moe"]["router_kernel"])

    assert not np.allclose(router(plain_state), router(aux_state))
    _, _, split = _step(MOE, _grpo(microbatches=2, coef=coef), batch)
    assert split[PREFIX + "aux_loss"] == pytest.approx(aux[PREFIX + "aux_loss"], rel=1e-5)

