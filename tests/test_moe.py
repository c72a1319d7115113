"""Mixture of experts: the router against float64 numpy references, dropless grouped-matmul experts
against a loop over tokens, expert parallelism on 8 fake devices, router replay, the MoE decoder's
cached and one-token decoding and greedy rollouts, presets and config errors."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import models, rollout
from r1jax.models import moe
from r1jax.sharding import Sharding, make_mesh

QWEN = models.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2,
                          num_heads=4, num_kv_heads=2, head_dim=8, model_type="qwen3_moe",
                          qk_norm=True, n_routed_experts=8, num_experts_per_tok=2,
                          moe_intermediate_size=16, norm_topk_prob=True, first_k_dense_replace=1,
                          max_position_embeddings=64)
# DeepSeek-V3-style routing: sigmoid scores, bias for the choice, 4 groups of 4, 2 groups kept,
# top-3, scaling 2.5, one shared expert.
DEEPSEEK = QWEN.replace(model_type="qwen3", n_routed_experts=16, num_experts_per_tok=3,
                        scoring="sigmoid", score_correction_bias=True, n_group=4, topk_group=2,
                        routed_scaling_factor=2.5, n_shared_experts=1, first_k_dense_replace=0)


def _softmax64(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _route64(cfg, logits, bias):
    """A float64 numpy reference of the router, written from the definitions, token by token."""
    scores = _softmax64(logits) if cfg.scoring == "softmax" else 1 / (1 + np.exp(-logits))
    indices, weights = [], []
    for s in scores:
        choice = s + (bias if bias is not None else 0.0)
        allowed = np.ones_like(choice, bool)
        if cfg.n_group > 1:
            groups = choice.reshape(cfg.n_group, -1)
            rank = np.sort(groups, axis=1)[:, -2:].sum(1)
            keep = np.argsort(-rank)[:cfg.topk_group]
            allowed = np.isin(np.arange(len(s)) // groups.shape[1], keep)
        top = sorted(np.flatnonzero(allowed), key=lambda e: -choice[e])[:cfg.num_experts_per_tok]
        w = s[top]
        if cfg.norm_topk_prob:
            w = w / w.sum()
        indices.append(top)
        weights.append(w * cfg.routed_scaling_factor)
    return np.array(indices), np.array(weights), scores


@pytest.mark.parametrize("cfg", [QWEN, DEEPSEEK, DEEPSEEK.replace(norm_topk_prob=False)],
                         ids=["softmax", "sigmoid-groups-bias", "sigmoid-unnormalized"])
def test_router_matches_float64_reference(cfg):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((40, cfg.n_routed_experts)) * 2
    bias = rng.standard_normal(cfg.n_routed_experts) * 0.5 if cfg.score_correction_bias else None
    got = moe.route(cfg, jnp.asarray(logits, jnp.float32),
                    None if bias is None else jnp.asarray(bias, jnp.float32))
    ref_idx, ref_w, ref_scores = _route64(cfg, logits, bias)
    order = np.argsort(np.asarray(got.indices_NxA), axis=1)
    ref_order = np.argsort(ref_idx, axis=1)
    np.testing.assert_array_equal(np.take_along_axis(np.asarray(got.indices_NxA), order, 1),
                                  np.take_along_axis(ref_idx, ref_order, 1))
    np.testing.assert_allclose(np.take_along_axis(np.asarray(got.weights_NxA), order, 1),
                               np.take_along_axis(ref_w, ref_order, 1), rtol=1e-5, atol=1e-6)
    if bias is not None:  # the bias changed the choice somewhere, but never the weights
        plain = moe.choose_experts(cfg, jnp.asarray(ref_scores, jnp.float32))
        assert not np.array_equal(np.sort(np.asarray(plain), 1), np.sort(ref_idx, 1))
    if cfg.n_group > 1:  # every token's experts lie within topk_group groups
        groups = ref_idx // (cfg.n_routed_experts // cfg.n_group)
        assert max(len(set(g)) for g in groups) <= cfg.topk_group


def _experts(rng, x, d, f):
    return [jnp.asarray(rng.standard_normal(s) * 0.3, jnp.float32)
            for s in ((x, d, f), (x, d, f), (x, f, d))]


def test_dropless_grouped_experts_equal_a_loop_over_tokens():
    rng = np.random.default_rng(1)
    n, d, f, x, a = 37, 8, 6, 5, 2
    x_NxD = rng.standard_normal((n, d)).astype(np.float32)
    idx = np.stack([rng.choice(x, a, replace=False) for _ in range(n)]).astype(np.int32)
    idx[:20] = [0, 3]  # a crowded expert and idle ones: no capacity, nothing dropped
    w = rng.random((n, a)).astype(np.float32)
    gate, up, down = _experts(rng, x, d, f)
    got = moe.expert_swiglu(jnp.asarray(x_NxD), jnp.asarray(idx), jnp.asarray(w), gate, up, down)
    g64, u64, d64 = (np.asarray(t, np.float64) for t in (gate, up, down))
    ref = np.zeros((n, d))
    for t in range(n):
        for j in range(a):
            e = idx[t, j]
            hg, hu = x_NxD[t] @ g64[e], x_NxD[t] @ u64[e]
            ref[t] += w[t, j] * ((hg / (1 + np.exp(-hg)) * hu) @ d64[e])
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-5)
    # A shard holding experts 2..3 computes exactly their share.
    part = moe.expert_swiglu(jnp.asarray(x_NxD), jnp.asarray(idx), jnp.asarray(w), gate[2:4],
                             up[2:4], down[2:4], expert_offset=2)
    rest = [moe.expert_swiglu(jnp.asarray(x_NxD), jnp.asarray(idx), jnp.asarray(w), gate[s],
                              up[s], down[s], expert_offset=s.start)
            for s in (slice(0, 2), slice(4, 5))]
    np.testing.assert_allclose(np.asarray(part + rest[0] + rest[1]), np.asarray(got), atol=1e-5)


def test_load_balance_stats_by_hand():
    probs = jnp.asarray([[0.7, 0.2, 0.1, 0.0], [0.1, 0.6, 0.2, 0.1], [0.25] * 4])
    idx = jnp.asarray([[0, 1], [1, 2], [3, 0]])
    stats = moe.load_balance_stats(probs, idx, jnp.asarray([True, True, False]))
    np.testing.assert_allclose(stats.token_fraction, [0.25, 0.5, 0.25, 0.0])
    np.testing.assert_allclose(stats.router_prob, [0.4, 0.4, 0.15, 0.05], rtol=1e-6)
    # X · Σ count/N · P = 4 · (0.5·0.4 + 1·0.4 + 0.5·0.15) = 2.7
    np.testing.assert_allclose(stats.aux_loss, 2.7, rtol=1e-6)
    np.testing.assert_allclose(stats.max_over_mean_load, 2.0 / 1.0)


def _layer_params(cfg, seed=0):
    variables = moe.MoE(cfg).init(jax.random.key(seed), jnp.zeros((1, 1, cfg.hidden_size)))
    p = jax.tree.map(lambda v: v * 10, nn.meta.unbox(variables["params"]))
    if cfg.score_correction_bias:
        p["score_bias"] = jnp.linspace(-0.3, 0.3, cfg.n_routed_experts)
    return p


def test_expert_parallel_equals_single_device_forward_and_gradients():
    """DeepSeek-style layer (groups, bias, shared expert), experts over 4 devices × data 2."""
    cfg, mesh_shape = DEEPSEEK, {"data": 2, "expert": 4}
    p = _layer_params(cfg)
    x_NxD = jax.random.normal(jax.random.key(1), (64, cfg.hidden_size))
    valid_N = jnp.arange(64) % 7 != 3

    def loss(p, x, sharding=None):
        y, stats = moe.moe_ffn(cfg, p, x, valid_N=valid_N, sharding=sharding)
        return jnp.sum(jnp.sin(y)) + stats.aux_loss, (y, stats.expert_indices)

    (value, (y, idx)), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        p, x_NxD)
    sharding = Sharding(make_mesh(mesh_shape))
    assert sharding.spec(("exp", "embed", "mlp")) == jax.sharding.PartitionSpec("expert")
    rows = sharding.named(("batch", None), x_NxD.shape)
    fn = jax.jit(jax.value_and_grad(lambda p, x: loss(p, x, sharding), argnums=(0, 1),
                                    has_aux=True))
    (value_s, (y_s, idx_s)), grads_s = fn(p, jax.device_put(x_NxD, rows))
    assert len(y_s.sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(idx_s), np.asarray(idx))
    np.testing.assert_allclose(np.asarray(y_s), np.asarray(y), atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(value_s, value, rtol=1e-5)
    jax.tree.map(lambda g, h: np.testing.assert_allclose(h, g, atol=2e-4, rtol=1e-4), grads,
                 grads_s)
    assert float(jnp.abs(grads[0]["router_kernel"]).max()) > 0  # gradients reach the router


@pytest.fixture(scope="module")
def params():
    """QWEN's parameters, scaled up so that routing and argmax are far from ties (jitted: an
    eager init of a scanned MoE decoder takes seconds per call on CPU)."""
    init = jax.jit(lambda r: models.init(QWEN, r))(jax.random.key(0))
    return jax.tree.map(lambda x: x * 5 if x.ndim > 1 else x + 0.2, init)


def test_expert_parallel_decoder_equals_single_device(params):
    """The Qwen3-MoE decoder (dense first layer, then MoE) with one expert per device: the same
    logits and statistics (gradients: the layer test above)."""
    cfg = QWEN
    tokens = jax.random.randint(jax.random.key(1), (8, 6), 0, cfg.vocab_size)
    mask = jnp.ones((8, 6), bool).at[1, :3].set(False)

    def run(p, sharding=None):
        out = models.forward(cfg, p, tokens, attention_mask_BxL=mask, sharding=sharding)
        return out.hidden_BxLxD @ out.lm_head_DxV, out.moe_stats

    logits, stats = jax.jit(run)(params)
    sharding = Sharding(make_mesh({"expert": 8}))
    shardings = models.param_shardings(cfg, sharding)
    assert shardings["layers"]["moe"]["gate_kernel"].spec == jax.sharding.PartitionSpec(
        None, "expert")
    logits_s, stats_s = jax.jit(lambda p: run(p, sharding), in_shardings=(shardings,))(
        jax.device_put(params, shardings))
    assert len(logits_s.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(logits_s), np.asarray(logits), atol=1e-4, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(stats_s.expert_indices),
                                  np.asarray(stats.expert_indices))
    np.testing.assert_allclose(np.asarray(stats_s.aux_loss), np.asarray(stats.aux_loss),
                               rtol=1e-5)


def test_router_replay_reproduces_routing_and_output(params):
    cfg = QWEN
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, cfg.vocab_size, (2, 9)))
    mask = jnp.ones((2, 9), bool).at[0, :4].set(False)
    forward = jax.jit(lambda p, e=None: models.forward(cfg, p, tokens, attention_mask_BxL=mask,
                                                       expert_indices=e))
    out = forward(params)
    chosen = out.moe_stats.expert_indices
    assert chosen.shape == (cfg.num_moe_layers, 2, 9, cfg.num_experts_per_tok)
    replay = forward(params, chosen)
    np.testing.assert_array_equal(np.asarray(replay.hidden_BxLxD), np.asarray(out.hidden_BxLxD))
    jax.tree.map(np.testing.assert_array_equal, replay.moe_stats, out.moe_stats)
    # Replaying under changed weights keeps the old choice (the point of replay), and the
    # forward then differs from choosing afresh.
    moved = jax.tree.map(lambda x: x, params)
    moved["layers"]["moe"]["router_kernel"] = params["layers"]["moe"]["router_kernel"] * -1.0
    fresh, kept = forward(moved), forward(moved, chosen)
    np.testing.assert_array_equal(np.asarray(kept.moe_stats.expert_indices), np.asarray(chosen))
    assert not np.array_equal(np.asarray(fresh.moe_stats.expert_indices), np.asarray(chosen))
    with pytest.raises(ValueError, match="expert_indices has shape"):
        models.forward(cfg, params, tokens, expert_indices=chosen[:, :1])


def test_moe_kv_cache_decoding_equals_full_forward(params):
    """Prefill a left-padded batch into the cache, then one token at a time (the path of the
    accelerator rollout and the paged prefill); the CPU one-token step is covered by the greedy
    rollout below."""
    cfg = QWEN
    prompt = jnp.asarray([[0, 0, 5, 17, 33], [7, 3, 12, 5, 8]])
    mask = jnp.asarray([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    new = jnp.asarray([[4, 9, 2], [11, 1, 30]])
    full_tokens = jnp.concatenate([prompt, new], 1)
    full_mask = jnp.concatenate([mask, jnp.ones_like(new)], 1)
    full = np.asarray(jax.jit(lambda p: models.logits(cfg, p, full_tokens, full_mask))(params))
    empty = models.init_cache(cfg, 2, full_tokens.shape[1])
    out = jax.jit(lambda p: models.forward(cfg, p, prompt, attention_mask_BxL=mask,
                                           cache=empty))(params)
    assert out.moe_stats.expert_indices.shape == (1, 2, 5, 2)
    step = jax.jit(lambda c, t: models.forward(cfg, params, t, cache=c))
    cache = out.cache
    for t in range(new.shape[1]):
        ref = step(cache, new[:, t:t + 1])
        cache = ref.cache
        np.testing.assert_allclose(np.asarray(ref.hidden_BxLxD[:, 0] @ ref.lm_head_DxV),
                                   full[:, prompt.shape[1] + t], atol=1e-4, rtol=1e-5)


def test_greedy_moe_rollout_is_the_teacher_forced_argmax(params):
    """The rollout engine runs the MoE decoder unchanged: greedy tokens (decoded with the cache)
    are the argmax of one teacher-forced forward over prompt + completion."""
    cfg = QWEN
    prompts = [[5, 17, 33], [7, 3, 12, 5, 8, 21], [44]]
    out = rollout.generate(params, cfg, prompts, rng=jax.random.key(0), max_new_tokens=8,
                           temperature=0.0)
    completions = np.asarray(out.tokens)
    width = max(map(len, prompts)) + completions.shape[1]
    seqs = np.zeros((len(prompts), width), np.int32)
    mask = np.zeros_like(seqs)
    for row, (prompt, completion) in enumerate(zip(prompts, completions)):
        seq = list(prompt) + list(completion)
        seqs[row, width - len(seq):], mask[row, width - len(seq):] = seq, 1
    logits = np.asarray(jax.jit(lambda p: models.logits(cfg, p, jnp.asarray(seqs),
                                                        jnp.asarray(mask)))(params))
    predicted = logits[:, -completions.shape[1] - 1:-1].argmax(-1)
    np.testing.assert_array_equal(completions, predicted)


def test_moe_presets_by_shape():
    """Shapes and logical axes (the parameter count: test_models' published-size test)."""
    big = models.get_config("qwen3-30b-a3b")
    shapes = models.param_shapes(big)["layers"]["moe"]
    assert shapes["gate_kernel"].shape == (48, 128, 2048, 768)
    assert shapes["router_kernel"].shape == (48, 2048, 128)
    axes = models.param_logical_axes(big)["layers"]["moe"]
    assert tuple(axes["down_kernel"]) == ("layers", "exp", "mlp", "embed")
    assert tuple(axes["router_kernel"]) == ("layers", "embed", None)
    tiny = models.param_shapes(models.get_config("tiny-moe"))
    assert tiny["dense_layers"]["mlp"]["gate_kernel"].shape == (1, 128, 384)
    assert tiny["layers"]["moe"]["down_kernel"].shape == (3, 8, 96, 128)


@pytest.mark.parametrize("bad, match", [
    ({"num_experts_per_tok": 9}, "num_experts_per_tok"),
    ({"moe_intermediate_size": 0}, "moe_intermediate_size"),
    ({"n_group": 3}, "n_group"),
    ({"n_group": 2, "topk_group": 3}, "topk_group"),
    ({"n_group": 2, "topk_group": 1, "num_experts_per_tok": 5}, "raise topk_group"),
    ({"n_group": 8}, "top-2"),
    ({"scoring": "tanh"}, "scoring"),
    ({"first_k_dense_replace": 2}, "first_k_dense_replace"),
    ({"routed_scaling_factor": 0.0}, "routed_scaling_factor"),
    ({"n_routed_experts": 0}, "qwen3_moe"),
])
def test_invalid_moe_config_names_the_field(bad, match):
    with pytest.raises(ValueError, match=match):
        QWEN.replace(**bad)
