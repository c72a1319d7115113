"""The decoder: presets checked by shape and count, KV-cache decoding (and the one-token CPU decode
step), remat, packing, config errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import models
from r1jax.models import decode
from r1jax.models.layers import grouped_query_attention, rope_tables
from r1jax.sharding import DEFAULT_RULES

# Published parameter counts (Hugging Face model cards / safetensors index totals).
PUBLISHED_PARAMS = {
    "qwen2.5-0.5b": 494_032_768,
    "qwen2.5-1.5b": 1_543_714_304,
    "qwen2.5-7b": 7_615_616_512,
    "qwen2.5-32b": 32_763_876_352,
    "qwen2.5-math-1.5b": 1_543_714_304,
    "qwen2.5-math-7b": 7_615_616_512,
    "llama3.1-8b": 8_030_261_248,
    "llama3.3-70b": 70_553_706_496,
    "qwen3-30b-a3b": 30_532_122_624,  # 61,064,245,248 bytes of bfloat16 in its index
}

SMALL = models.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2,
                           num_heads=4, num_kv_heads=2, head_dim=8, model_type="qwen2",
                           qkv_bias=True, tie_embeddings=False)


def _random_params(cfg, seed=0):
    params = models.init(cfg, jax.random.key(seed))
    # Larger than the default init, so attention is far from uniform and errors show.
    return jax.tree.map(lambda x: x * 8 if x.ndim > 1 else x + 0.2, params)


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_full_size_presets_by_shape_only(name):
    cfg = models.get_config(name)
    assert models.count_params(cfg) == PUBLISHED_PARAMS[name]
    shapes = models.param_shapes(cfg)  # eval_shape: nothing is allocated
    q = shapes["layers"]["attn"]["q_kernel"]
    assert q.shape == (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.head_dim)
    assert ("lm_head" in shapes) == (not cfg.tie_embeddings)


@pytest.mark.parametrize("name", ["qwen2.5-7b", "deepseek-v3"])
def test_every_parameter_has_logical_axes(name):
    cfg = models.get_config(name)
    axes = models.param_logical_axes(cfg)
    shapes = models.param_shapes(cfg)
    known = {"layers", "vocab", "embed", "mlp", "heads", "kv_heads", "head_dim"}
    if cfg.is_moe:  # experts, and the router's and score bias's expert axis (replicated)
        known |= {"exp", None}
    if cfg.is_mla:
        known |= {"latent"}
    assert known - {None} <= {name for name, _ in DEFAULT_RULES}
    flat_axes = jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    for spec, shape in zip(flat_axes, jax.tree.leaves(shapes)):
        assert len(spec) == len(shape.shape) and set(spec) <= known


def test_unknown_preset_lists_known_ones():
    with pytest.raises(KeyError, match="qwen2.5-7b"):
        models.get_config("qwen2.5-8b")


@pytest.mark.parametrize("bad, match", [
    (dict(num_heads=6, num_kv_heads=4), "multiple of num_kv_heads"),
    (dict(dtype="fp8"), "dtype"),
    (dict(model_type="mistral"), "model_type"),
    (dict(remat="some"), "remat"),
    (dict(head_dim=7), "even"),
])
def test_invalid_config_names_the_field(bad, match):
    with pytest.raises(ValueError, match=match):
        SMALL.replace(**bad)


def test_kv_cache_decoding_equals_full_forward():
    """Prefill a left-padded batch, then decode one token at a time: each step's logits equal the
    teacher-forced full forward at that position."""
    cfg = SMALL
    params = _random_params(cfg)
    rng = np.random.default_rng(0)
    prompt_len, new = 6, 5
    tokens = rng.integers(0, cfg.vocab_size, (3, prompt_len + new))
    mask = np.ones_like(tokens)
    mask[0, :2] = 0  # row 0 has a 4-token prompt, row 2 a 1-token prompt
    mask[2, :5] = 0
    full = np.asarray(models.logits(cfg, params, jnp.asarray(tokens), jnp.asarray(mask)))

    cache = models.init_cache(cfg, 3, prompt_len + new + 3)  # spare slots stay invalid
    out = models.forward(cfg, params, jnp.asarray(tokens[:, :prompt_len]),
                         attention_mask_BxL=jnp.asarray(mask[:, :prompt_len]), cache=cache)
    step = jax.jit(lambda c, t: models.forward(cfg, params, t, cache=c))
    cache, decoded = out.cache, [out.hidden_BxLxD[:, -1] @ out.lm_head_DxV]
    for t in range(prompt_len, prompt_len + new - 1):
        out = step(cache, jnp.asarray(tokens[:, t:t + 1]))
        cache = out.cache
        decoded.append(out.hidden_BxLxD[:, -1] @ out.lm_head_DxV)
    decoded = np.stack([np.asarray(d) for d in decoded], axis=1)
    np.testing.assert_allclose(decoded, full[:, prompt_len - 1:-1], atol=2e-5, rtol=2e-5)
    assert int(cache.index) == prompt_len + new - 1


def test_left_padding_does_not_change_a_sequence():
    """The same sequence alone and left-padded in a batch gives the same logits."""
    cfg = SMALL
    params = _random_params(cfg, seed=3)
    seq = np.array([5, 9, 11, 2, 40])
    alone = models.logits(cfg, params, jnp.asarray(seq[None]))
    padded = np.concatenate([np.zeros(3, int), seq])[None]
    mask = np.concatenate([np.zeros(3, int), np.ones(5, int)])[None]
    batched = models.logits(cfg, params, jnp.asarray(padded), jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(batched)[0, 3:], np.asarray(alone)[0], atol=2e-5)


def test_packed_segments_equal_separate_sequences():
    cfg = SMALL
    params = _random_params(cfg, seed=4)
    a, b = np.array([3, 4, 5, 6]), np.array([7, 8, 9])
    packed = np.concatenate([a, b])[None]
    segments = np.array([[1, 1, 1, 1, 2, 2, 2]])
    positions = np.array([[0, 1, 2, 3, 0, 1, 2]])
    out = models.logits(cfg, params, jnp.asarray(packed), segment_ids_BxL=jnp.asarray(segments),
                        positions_BxL=jnp.asarray(positions))
    ref_a = models.logits(cfg, params, jnp.asarray(a[None]))
    ref_b = models.logits(cfg, params, jnp.asarray(b[None]))
    np.testing.assert_allclose(np.asarray(out)[0, :4], np.asarray(ref_a)[0], atol=2e-5)
    np.testing.assert_allclose(np.asarray(out)[0, 4:], np.asarray(ref_b)[0], atol=2e-5)


@pytest.mark.parametrize("policy", ["full", "dots"])
def test_remat_keeps_values_and_gradients(policy):
    cfg = SMALL
    params = _random_params(cfg, seed=5)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 7)))

    def loss(p, c):
        return jnp.mean(jax.nn.log_softmax(models.logits(c, p, tokens))[..., 0])

    value, grads = jax.value_and_grad(loss)(params, cfg)
    value_r, grads_r = jax.value_and_grad(loss)(params, cfg.replace(remat=policy))
    np.testing.assert_allclose(value_r, value, rtol=1e-6)
    jax.tree.map(lambda g, h: np.testing.assert_allclose(h, g, atol=1e-6, rtol=1e-5), grads,
                 grads_r)


def test_bfloat16_keeps_norms_and_logits_in_float32():
    cfg = SMALL.replace(dtype="bfloat16", param_dtype="bfloat16")
    params = models.init(cfg, jax.random.key(0))
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params))
    out = models.forward(cfg, params, jnp.ones((1, 4), jnp.int32))
    assert out.hidden_BxLxD.dtype == jnp.bfloat16
    assert models.logits(cfg, params, jnp.ones((1, 4), jnp.int32)).dtype == jnp.float32
    params32 = jax.tree.map(lambda x: x.astype(jnp.float32), params)
    cfg32 = SMALL
    tokens = jnp.asarray([[1, 5, 9, 13]])
    low = np.asarray(models.logits(cfg, params, tokens))
    high = np.asarray(models.logits(cfg32, params32, tokens))
    np.testing.assert_allclose(low, high, atol=0.05 * np.abs(high).max())


def test_cache_batch_mismatch_is_rejected():
    cfg = SMALL
    params = models.init(cfg, jax.random.key(0))
    with pytest.raises(ValueError, match="cache holds 2 sequences"):
        models.forward(cfg, params, jnp.ones((3, 1), jnp.int32), cache=models.init_cache(cfg, 2, 8))


def test_widening_matmul_value_and_gradients_match_float64():
    from r1jax.models.layers import widening_matmul

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 8)).astype(np.float32)
    w = rng.standard_normal((8, 24)).astype(np.float32)
    dy = rng.standard_normal((2, 5, 24)).astype(np.float32)
    y, vjp = jax.vjp(widening_matmul, jnp.asarray(x), jnp.asarray(w))
    dx, dw = vjp(jnp.asarray(dy))
    x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
    np.testing.assert_allclose(np.asarray(y), x64 @ w64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dx), dy64 @ w64.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dw), x64.reshape(-1, 8).T @ dy64.reshape(-1, 24),
                               rtol=1e-5, atol=1e-5)
    assert dw.shape == w.shape and dx.shape == x.shape


def test_rope_table_lookup_matches_the_formula_and_rejects_out_of_range_positions():
    cfg = SMALL
    positions = jnp.asarray([[0, 1, 7, 4095], [3, 2, 1, 0]], jnp.int32)
    computed = rope_tables(cfg, positions)
    looked_up = rope_tables(cfg, positions, max_position=4096)
    for a, b in zip(computed, looked_up):
        assert a.shape == b.shape == (2, 4, 1, cfg.head_dim // 2)
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=2e-6)
    cos, sin = rope_tables(cfg, jnp.asarray([4095, 4096]), max_position=4096)
    assert np.isfinite(np.asarray(cos[0])).all() and np.isnan(np.asarray(cos[1])).all()
    assert np.isnan(np.asarray(sin[1])).all()


@pytest.mark.parametrize("cfg", [
    SMALL,
    SMALL.replace(model_type="qwen3", qkv_bias=False, qk_norm=True, tie_embeddings=True),
    SMALL.replace(model_type="llama", qkv_bias=False, rope_theta=500_000.0,
                  rope_scaling=models.RopeScaling(8.0, 1.0, 4.0, 64)),
], ids=["qwen2", "qwen3", "llama3"])
@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
def test_lean_decode_step_equals_models_forward(cfg, fuse):
    """The decode step (fused or separate weights, transposed key cache) computes models.forward."""
    params = models.init(cfg, jax.random.key(1))
    prompt = jnp.asarray([[0, 0, 5, 17, 33], [7, 3, 12, 5, 8]])
    mask = jnp.asarray([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    new = jnp.asarray([[4, 9, 2], [11, 1, 30]])
    slots = prompt.shape[1] + new.shape[1]
    out = models.forward(cfg, params, prompt, attention_mask_BxL=mask,
                         cache=models.init_cache(cfg, 2, slots))
    cache, (keys, values) = out.cache, decode.to_decode_cache(out.cache)
    weights = decode.prepare_weights(cfg, params, fuse=fuse)
    for t in range(new.shape[1]):
        ref = models.forward(cfg, params, new[:, t:t + 1], cache=cache)
        cache = ref.cache
        expected = np.asarray(ref.hidden_BxLxD[:, 0] @ ref.lm_head_DxV)
        slot = prompt.shape[1] + t
        valid = jnp.pad(mask.astype(bool), ((0, 0), (0, new.shape[1])))
        valid = valid | ((jnp.arange(slots) >= prompt.shape[1]) & (jnp.arange(slots) <= slot))
        rope = rope_tables(cfg, mask.sum(1) + t)
        logits, keys, values = decode.decode_step(cfg, weights, new[:, t], rope, slot, valid,
                                                  keys, values)
        np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-5, rtol=1e-5)


def test_grouped_query_attention_layouts_agree():
    """One token per row with transposed keys and the scale folded into q (the decode step's
    form) attends like the training form."""
    rng = np.random.default_rng(2)
    q_BxKxGxLxE, k_BxKxSxE, v_BxKxSxE = (jnp.asarray(rng.standard_normal(s), jnp.float32)
                                         for s in ((2, 2, 3, 1, 8), (2, 2, 6, 8), (2, 2, 6, 8)))
    mask_BxLxS = jnp.asarray(rng.random((2, 1, 6)) < 0.7).at[:, :, 0].set(True)
    full = grouped_query_attention(q_BxKxGxLxE, k_BxKxSxE, v_BxKxSxE, mask_BxLxS, scale=8 ** -0.5)
    one = grouped_query_attention(q_BxKxGxLxE[:, :, :, 0] * 8 ** -0.5,
                                  k_BxKxSxE.transpose(0, 1, 3, 2), v_BxKxSxE, mask_BxLxS[:, 0],
                                  keys_transposed=True)
    assert full.shape == (2, 2, 3, 1, 8) and one.shape == (2, 2, 3, 8)
    np.testing.assert_allclose(np.asarray(one), np.asarray(full)[:, :, :, 0], atol=1e-6)
