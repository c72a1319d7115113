"""Multi-head Latent Attention: parity with transformers' DeepseekV3Attention (q LoRA or not,
YaRN or not, biases, both rope layouts), left padding, the latent-cache decode against the full
forward, YaRN's frequencies against a float64 reference, config errors."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.models import mla, yarn
from r1jax.models.decoder import positions_from_mask
from r1jax.models.layers import attention_weights_mask

torch = pytest.importorskip("torch")
hf_ds = pytest.importorskip("transformers.models.deepseek_v3.modeling_deepseek_v3")

D, H, R, EN, ER, EV = 32, 4, 12, 8, 8, 6
YARN = {"factor": 4.0, "original_max_position_embeddings": 256, "beta_fast": 32.0,
        "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 0.8}


def _configs(q_lora, use_yarn, bias, interleave):
    rope = {"rope_type": "default", "rope_theta": 1000.0}
    if use_yarn:
        rope = {"rope_type": "yarn", "rope_theta": 1000.0, **YARN}
    hf_cfg = hf_ds.DeepseekV3Config(
        vocab_size=64, hidden_size=D, num_attention_heads=H, num_key_value_heads=H,
        q_lora_rank=q_lora, kv_lora_rank=R, qk_nope_head_dim=EN, qk_rope_head_dim=ER,
        v_head_dim=EV, rope_parameters=rope, rope_interleave=interleave, attention_bias=bias,
        max_position_embeddings=1024, num_hidden_layers=1, rms_norm_eps=1e-6)
    hf_cfg._attn_implementation = "eager"
    ours = mla.MLAConfig(hidden_size=D, num_heads=H, kv_lora_rank=R, qk_nope_head_dim=EN,
                         qk_rope_head_dim=ER, v_head_dim=EV, q_lora_rank=q_lora, rope_theta=1000.0,
                         rope_scaling=yarn.YarnScaling(**YARN) if use_yarn else None,
                         rope_interleave=interleave, attention_bias=bias)
    return hf_cfg, ours


def _build(q_lora=16, use_yarn=True, bias=False, interleave=True, seed=0):
    """transformers' attention with random weights, and the same weights in r1jax's layout."""
    hf_cfg, cfg = _configs(q_lora, use_yarn, bias, interleave)
    torch.manual_seed(seed)
    attn = hf_ds.DeepseekV3Attention(hf_cfg, layer_idx=0).eval()
    with torch.no_grad():
        for name, w in attn.named_parameters():
            w.copy_(1 + 0.2 * torch.randn_like(w) if "layernorm" in name else
                    0.25 * torch.randn_like(w))
    w = {n: v.detach().numpy().astype(np.float32) for n, v in attn.state_dict().items()}
    qk = EN + ER
    p = {"kv_a_kernel": w["kv_a_proj_with_mqa.weight"].T,
         "kv_a_norm": {"scale": w["kv_a_layernorm.weight"]},
         "kv_b_kernel": w["kv_b_proj.weight"].T.reshape(R, H, EN + EV),
         "o_kernel": w["o_proj.weight"].T.reshape(H, EV, D)}
    if q_lora is None:
        p["q_kernel"] = w["q_proj.weight"].T.reshape(D, H, qk)
    else:
        p["q_a_kernel"] = w["q_a_proj.weight"].T
        p["q_a_norm"] = {"scale": w["q_a_layernorm.weight"]}
        p["q_b_kernel"] = w["q_b_proj.weight"].T.reshape(q_lora, H, qk)
    if bias:
        p["kv_a_bias"], p["o_bias"] = w["kv_a_proj_with_mqa.bias"], w["o_proj.bias"]
        if q_lora is not None:
            p["q_a_bias"] = w["q_a_proj.bias"]
    # The module's own parameter tree has exactly these names and shapes.
    expected = jax.tree.map(lambda a: a.shape, jax.eval_shape(
        lambda: mla.init(cfg, jax.random.key(0))))
    assert jax.tree.map(lambda a: a.shape, p) == expected
    return attn, hf_ds.DeepseekV3RotaryEmbedding(hf_cfg), cfg, jax.tree.map(jnp.asarray, p)


def _hf(attn, rotary, x_BxLxD):
    """transformers on unpadded rows (positions 0…L-1, causal mask)."""
    batch, length, _ = x_BxLxD.shape
    x = torch.from_numpy(x_BxLxD)
    positions = torch.arange(length)[None].expand(batch, length)
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool))
    mask = torch.where(causal, 0.0, torch.finfo(torch.float32).min)[None, None]
    with torch.no_grad():
        out, _ = attn(x, rotary(x, positions), mask.expand(batch, 1, length, length))
    return out.numpy()


@functools.partial(jax.jit, static_argnums=0)
def _forward(cfg, p, x_BxLxD, mask_BxL):
    batch, length, _ = x_BxLxD.shape
    rope = mla.mla_rope_tables(cfg, positions_from_mask(mask_BxL))
    slots = jnp.broadcast_to(jnp.arange(length), (batch, length))
    return mla.mla_attention(cfg, p, x_BxLxD, rope, attention_weights_mask(slots, mask_BxL))


def _ours(cfg, p, x_BxLxD, attention_mask_BxL=None):
    """r1jax's forward, positions and mask from the attention mask (as the decoder builds them)."""
    mask_BxL = (np.ones(x_BxLxD.shape[:2], bool) if attention_mask_BxL is None
                else attention_mask_BxL.astype(bool))
    return np.asarray(_forward(cfg, p, jnp.asarray(x_BxLxD), jnp.asarray(mask_BxL)))


def _inputs(batch, length, seed=1):
    return np.random.default_rng(seed).normal(size=(batch, length, D)).astype(np.float32)


@pytest.mark.parametrize("q_lora, use_yarn, bias, interleave", [
    (16, True, False, True),     # DeepSeek-V3's shape of options
    (None, True, True, True),    # V2-Lite: no q LoRA
    (16, False, True, False),
    (None, False, False, False),
])
def test_forward_matches_transformers(q_lora, use_yarn, bias, interleave):
    attn, rotary, cfg, p = _build(q_lora, use_yarn, bias, interleave)
    x = _inputs(2, 9)
    want = _hf(attn, rotary, x)
    got = _ours(cfg, p, x)
    assert np.abs(want).max() > 0.5  # far from a degenerate (zero) output
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_left_padded_batch_matches_each_sequence_alone():
    attn, rotary, cfg, p = _build()
    lengths, total = (9, 5, 2), 9
    rows = [_inputs(1, n, seed=10 + i)[0] for i, n in enumerate(lengths)]
    x = np.zeros((len(rows), total, D), np.float32)
    mask = np.zeros((len(rows), total), bool)
    for b, row in enumerate(rows):
        x[b, total - len(row):], mask[b, total - len(row):] = row, True
    x[~mask] = 7.0  # padding content must not leak into real tokens
    got = _ours(cfg, p, x, mask)
    for b, row in enumerate(rows):
        alone = _ours(cfg, p, row[None])[0]
        want = _hf(attn, rotary, row[None])[0]
        np.testing.assert_allclose(got[b, total - len(row):], alone, atol=1e-5, rtol=0)
        np.testing.assert_allclose(got[b, total - len(row):], want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("q_lora, interleave", [(16, True), (None, False)])
def test_latent_cache_decode_equals_full_forward(q_lora, interleave):
    _, _, cfg, p = _build(q_lora, use_yarn=True, bias=True, interleave=interleave)
    lengths, total, prompt = (8, 5), 8, 4  # row 1 is left-padded by 3
    x = _inputs(2, total, seed=3)
    mask = np.zeros((2, total), bool)
    for b, n in enumerate(lengths):
        mask[b, total - n:] = True
    full = _ours(cfg, p, x, mask)

    # Prefill the first `prompt` slots into the cache in one call, then one token at a time.
    cache = mla.init_latent_cache(cfg, 2, total)
    assert cache[0].shape[-1] + cache[1].shape[-1] == cfg.cache_width == R + ER
    mask_j = jnp.asarray(mask)
    positions = positions_from_mask(mask_j)
    slots = jnp.broadcast_to(jnp.arange(prompt), (2, prompt))
    weights = attention_weights_mask(slots, jnp.zeros_like(mask_j).at[:, :prompt].set(
        mask_j[:, :prompt]))
    prefill = jax.jit(functools.partial(mla.mla_attention_cached, cfg), static_argnums=5)
    out, cache = prefill(p, jnp.asarray(x[:, :prompt]),
                         mla.mla_rope_tables(cfg, positions[:, :prompt]), weights, cache, 0)
    outs = [np.asarray(out)]
    step = jax.jit(lambda x_BxD, rope, slot, valid, cache: mla.mla_decode_token(
        cfg, p, x_BxD, rope, slot, valid, cache))
    for t in range(prompt, total):
        valid = mask_j & (jnp.arange(total) <= t)[None]
        out, cache = step(jnp.asarray(x[:, t]), mla.mla_rope_tables(cfg, positions[:, t]), t,
                          valid, cache)
        outs.append(np.asarray(out)[:, None])
    decoded = np.concatenate(outs, axis=1)
    np.testing.assert_allclose(decoded[mask], full[mask], atol=1e-5, rtol=0)


def _yarn_reference_float64(dim, theta, factor, context, beta_fast, beta_slow):
    """YaRN's blended inverse frequencies, written out from the formula in float64."""
    i = np.arange(dim // 2, dtype=np.float64)
    base = theta ** (-2 * i / dim)
    # dimension index at which a pair turns `r` times over the original context
    at = lambda r: dim * np.log(context / (2 * np.pi * r)) / (2 * np.log(theta))
    low, high = max(np.floor(at(beta_fast)), 0), min(np.ceil(at(beta_slow)), dim - 1)
    interp = np.clip((i - low) / (high - low), 0, 1)  # 0: keep the frequency, 1: divide it
    return base * (1 - interp) + base / factor * interp, (low, high)


def test_yarn_inverse_frequencies_float64_reference():
    # DeepSeek-V3's published rope settings.
    scaling = yarn.YarnScaling(factor=40.0, original_max_position_embeddings=4096, beta_fast=32,
                               beta_slow=1, mscale=1.0, mscale_all_dim=1.0)
    want, (low, high) = _yarn_reference_float64(64, 10_000.0, 40.0, 4096, 32, 1)
    assert (low, high) == (10, 23) == yarn.yarn_correction_range(64, 10_000.0, scaling)
    got = yarn.rope_inverse_frequencies(64, 10_000.0, scaling)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=0)
    np.testing.assert_array_equal(got[:10], (10_000.0 ** (-np.arange(0, 64, 2) / 64))[:10]
                                  .astype(np.float32))  # high frequencies untouched
    assert scaling.rope_attention_factor == 1.0
    # transformers' float32 YaRN gives the same frequencies and cos/sin factor.
    hf_cfg = hf_ds.DeepseekV3Config(qk_rope_head_dim=64, num_hidden_layers=1, rope_parameters={
        "rope_type": "yarn", "rope_theta": 10_000.0, "factor": 40.0, "beta_fast": 32,
        "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096})
    rotary = hf_ds.DeepseekV3RotaryEmbedding(hf_cfg)
    np.testing.assert_allclose(got, rotary.inv_freq.numpy(), rtol=1e-6, atol=0)
    assert rotary.attention_scaling == pytest.approx(scaling.rope_attention_factor, rel=1e-12)
    mscale = 0.1 * math.log(40.0) + 1.0
    cfg = mla.MLAConfig(hidden_size=7168, num_heads=128, kv_lora_rank=512, qk_nope_head_dim=128,
                        qk_rope_head_dim=64, v_head_dim=128, q_lora_rank=1536,
                        rope_scaling=scaling)
    assert cfg.softmax_scale == pytest.approx(192 ** -0.5 * mscale ** 2, rel=1e-12)
    assert (cfg.cache_width, cfg.dense_kv_width) == (576, 40_960)
    # A non-V3 setting where mscale ≠ mscale_all_dim: the cos/sin factor is their ratio.
    other = yarn.YarnScaling(**YARN)
    assert other.rope_attention_factor == pytest.approx(
        (0.1 * math.log(4) + 1) / (0.08 * math.log(4) + 1), rel=1e-12)


def test_rope_tables_carry_the_attention_factor():
    scaling = yarn.YarnScaling(**YARN)
    cos, sin = yarn.rope_tables(ER, 1000.0, scaling, jnp.arange(5))
    assert cos.shape == (5, 1, ER // 2)
    np.testing.assert_allclose(np.asarray(cos ** 2 + sin ** 2),
                               scaling.rope_attention_factor ** 2, rtol=1e-6)


@pytest.mark.parametrize("bad, match", [
    ({"qk_rope_head_dim": 7}, "qk_rope_head_dim must be even"),
    ({"q_lora_rank": 0}, "q_lora_rank must be >= 1, or None"),
    ({"kv_lora_rank": 0}, "kv_lora_rank must be >= 1"),
    ({"dtype": "float8"}, "dtype 'float8' is not one of"),
    ({"rope_scaling": {"factor": 4.0, "original_max_position_embeddings": 64, "beta_fast": 1.0,
                       "beta_slow": 2.0}}, "beta_fast > beta_slow"),
    ({"rope_scaling": "yarn"}, "rope_scaling must be a YarnScaling"),
])
def test_config_errors_name_the_field(bad, match):
    fields = {"hidden_size": D, "num_heads": H, "kv_lora_rank": R, "qk_nope_head_dim": EN,
              "qk_rope_head_dim": ER, "v_head_dim": EV}
    with pytest.raises(ValueError, match=match):
        mla.MLAConfig(**{**fields, **bad})


def test_parameters_carry_logical_axes():
    cfg = _configs(16, True, True, True)[1]
    boxed = jax.eval_shape(lambda: mla.MultiHeadLatentAttention(cfg).init(
        jax.random.key(0), jnp.zeros((1, 1, D)), mla.mla_rope_tables(cfg, jnp.zeros((1, 1))),
        jnp.ones((1, 1, 1), bool)))["params"]
    axes = jax.tree.leaves(jax.tree.map(lambda b: b.names, boxed,
                                        is_leaf=lambda b: hasattr(b, "names")))
    known = {"embed", "heads", "head_dim", mla.LATENT_AXIS}
    assert axes and set(axes) <= known
