"""Building blocks of the decoder: RMSNorm, rotary embeddings, grouped-query attention, SwiGLU.

The math is in plain functions (``rms_norm``, ``apply_rope``, ``grouped_query_attention``,
``swiglu``, ``embed``) that both the Flax modules here (the training forward) and the one-token
decode step (``r1jax.models.decode``) call, so the two paths cannot drift apart.

Array names carry their shape; the letters are ``r1jax``'s one legend (``r1jax/__init__.py``).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from r1jax.models import yarn
from r1jax.models.config import ModelConfig, RopeScaling
from r1jax.sharding import Sharding, constrain

# Large-but-finite so that a fully masked row (a left-pad query) gives a uniform softmax, not NaN.
MASK_VALUE = float(np.finfo(np.float32).min)


def param(module: nn.Module, name: str, init, shape, axes, dtype):
    """``module.param`` carrying the logical axis names ``axes`` (for sharding rules)."""
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


def embed(cfg: ModelConfig, embedding_VxD, tokens, sharding: Sharding | None = None):
    """The embedding rows of ``tokens`` (``[B, L]``, or ``[B]`` for one token per row) in the
    activation dtype: ``[B, L, D]`` (or ``[B, D]``)."""
    x = jnp.take(embedding_VxD, tokens, axis=0).astype(cfg.activation_dtype)
    return constrain(x, ("batch", "length")[:tokens.ndim] + ("act_embed",), sharding)


def rms_norm(x, scale, eps: float):
    """``x / sqrt(mean(x²) + eps) * scale`` over the last axis, in float32, in x's dtype."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
    return (y * scale.astype(jnp.float32)).astype(x.dtype)


class RMSNorm(nn.Module):
    """``y = x / sqrt(mean(x²) + eps) * scale``, computed in float32."""

    eps: float
    axis_name: str = "embed"
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        scale = param(self, "scale", nn.initializers.ones, (x.shape[-1],), (self.axis_name,),
                      self.param_dtype)
        return rms_norm(x, scale, self.eps)


def rope_inverse_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None) -> np.ndarray:
    """``θ^(-2i/E)`` for ``i < E/2``, with Llama 3's frequency-dependent scaling when given.

    Llama 3 scaling keeps high frequencies (wavelength < original_context / high_freq_factor),
    divides low frequencies (wavelength > original_context / low_freq_factor) by ``factor``, and
    interpolates smoothly between the two.
    """
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    if scaling is None:
        return inv_freq.astype(np.float32)
    old_context = scaling.original_max_position_embeddings
    wavelen = 2 * np.pi / inv_freq
    low_freq_wavelen = old_context / scaling.low_freq_factor
    high_freq_wavelen = old_context / scaling.high_freq_factor
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (old_context / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return np.where(is_medium, smoothed, scaled).astype(np.float32)


def rope_tables(cfg: ModelConfig, positions, max_position: int | None = None):
    """``(cos, sin)``, each ``[..., 1, E/2]``, of every position in ``positions`` (any shape).

    Computed once per forward and shared by all layers and heads. On CPU, given ``max_position``
    (a static bound: every position is below it), the values are looked up in a table built on
    the host: computed on device, XLA:CPU fuses cos/sin into every consumer and re-evaluates them
    for each element of q and k (two transcendentals per element, per layer). Out-of-range
    positions read NaN, never a wrong angle. Accelerators compute them on device (a table would
    be a constant of ``max_position`` rows in every compiled program).

    With YaRN (deepseek_v3, whose ``head_dim`` is its rope part's) the frequencies are YaRN's
    and its ``rope_attention_factor`` multiplies both tables (``r1jax.models.yarn``).
    """
    factor = 1.0
    if isinstance(cfg.rope_scaling, yarn.YarnScaling):
        inv_freq_Eh = yarn.rope_inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        factor = cfg.rope_scaling.rope_attention_factor
    else:
        inv_freq_Eh = rope_inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
    if max_position is None or jax.default_backend() != "cpu":
        angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq_Eh)
        cos, sin = jnp.cos(angles), jnp.sin(angles)
    else:
        # The same float32 angles as above; their cos/sin rounded once from float64.
        angles_PxEh = (np.arange(max_position, dtype=np.float32)[:, None] * inv_freq_Eh
                       ).astype(np.float64)
        cos, sin = (jnp.take(jnp.asarray(f(angles_PxEh), jnp.float32), positions, axis=0,
                             mode="fill", fill_value=jnp.nan) for f in (np.cos, np.sin))
    if factor != 1.0:
        cos, sin = cos * factor, sin * factor
    return cos[..., None, :], sin[..., None, :]


def apply_rope(x_BxLxNxE, rope, scale: float = 1.0):
    """Rotate the two halves of each head (the Hugging Face "rotate_half" layout), times
    ``scale``; ``rope`` is ``rope_tables`` of the positions (broadcasting over the heads)."""
    cos, sin = rope
    x = x_BxLxNxE.astype(jnp.float32)
    x1, x2 = jnp.split(x, 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    if scale != 1.0:
        out = out * scale
    return out.astype(x_BxLxNxE.dtype)


def attention_weights_mask(query_slots_BxL, key_valid_BxS, segment_ids=None):
    """Causal ∧ key-valid (∧ same segment) mask ``[B, L, S]``: query at slot q sees keys ≤ q."""
    key_slots_S = jnp.arange(key_valid_BxS.shape[1])
    causal_BxLxS = key_slots_S[None, None, :] <= query_slots_BxL[:, :, None]
    mask_BxLxS = causal_BxLxS & key_valid_BxS[:, None, :]
    if segment_ids is not None:
        query_seg_BxL, key_seg_BxS = segment_ids
        mask_BxLxS &= query_seg_BxL[:, :, None] == key_seg_BxS[:, None, :]
    return mask_BxLxS


def grouped_query_attention(q, keys, values, mask, *, keys_transposed: bool = False,
                            scale: float | None = None):
    """Softmax attention of each group of Q query heads to its KV head; scores and softmax in
    float32, the weighted sum in the values' dtype.

    ``q`` is ``[B, K, Q, L, E]``, or ``[B, K, Q, E]`` for one new token per row; ``mask`` is
    ``[B, L, S]`` (or ``[B, S]``), True where a query may see a key. ``values`` are
    ``[B, K, S, E]``; ``keys`` too, or ``[B, K, E, S]`` with ``keys_transposed`` (the decode
    cache: the scores are then a plain matmul). ``scale`` multiplies the scores; None where the
    caller folded it into ``q``. Returns q's shape.
    """
    query = "bkgl" if q.ndim == 5 else "bkg"
    key = "bkes" if keys_transposed else "bkse"
    scores = jnp.einsum(f"{query}e,{key}->{query}s", q, keys, preferred_element_type=jnp.float32)
    if scale is not None:
        scores = scores * scale
    scores = jnp.where(mask[:, None, None], scores, MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(values.dtype)
    return jnp.einsum(f"{query}s,bkse->{query}e", probs, values)


def dot_product_attention(q_BxLxHxE, k_BxKxSxE, v_BxKxSxE, mask_BxLxS):
    """``grouped_query_attention`` of ``[B, L, H, E]`` queries, scaled by ``E^-0.5``.

    Keys and values are ``[B, K, S, E]`` (the KV-cache layout): the batch axes of both attention
    matmuls lead, so neither needs a transposed copy of the cache.
    """
    batch, length, num_heads, head_dim = q_BxLxHxE.shape
    num_kv = k_BxKxSxE.shape[1]
    q_BxKxQxLxE = q_BxLxHxE.reshape(batch, length, num_kv, num_heads // num_kv, head_dim
                                    ).transpose(0, 2, 3, 1, 4)
    out_BxKxQxLxE = grouped_query_attention(q_BxKxQxLxE, k_BxKxSxE, v_BxKxSxE, mask_BxLxS,
                                            scale=head_dim ** -0.5)
    return out_BxKxQxLxE.transpose(0, 3, 1, 2, 4).reshape(batch, length, num_heads, head_dim)


class Attention(nn.Module):
    """Grouped-query attention with RoPE, optional q/k/v bias (Qwen2) and q/k RMSNorm (Qwen3)."""

    cfg: ModelConfig
    sharding: Sharding | None = None

    @nn.compact
    def __call__(self, x_BxLxD, rope, mask_BxLxS, kv_cache=None, cache_index=None):
        cfg = self.cfg
        dtype, pdtype = cfg.activation_dtype, cfg.weight_dtype
        init = nn.initializers.normal(stddev=0.02)

        def project(name, num, axes_name):
            kernel = param(self, f"{name}_kernel", init, (cfg.hidden_size, num, cfg.head_dim),
                           ("embed", axes_name, "head_dim"), pdtype)
            y = jnp.einsum("bld,dne->blne", x_BxLxD, kernel.astype(dtype))
            if cfg.qkv_bias:
                bias = param(self, f"{name}_bias", nn.initializers.zeros, (num, cfg.head_dim),
                             (axes_name, "head_dim"), pdtype)
                y = y + bias.astype(dtype)
            return y

        q_BxLxHxE = project("q", cfg.num_heads, "heads")
        k_BxLxKxE = project("k", cfg.num_kv_heads, "kv_heads")
        v_BxLxKxE = project("v", cfg.num_kv_heads, "kv_heads")
        if cfg.qk_norm:
            q_BxLxHxE = RMSNorm(cfg.rms_norm_eps, "head_dim", pdtype, name="q_norm")(q_BxLxHxE)
            k_BxLxKxE = RMSNorm(cfg.rms_norm_eps, "head_dim", pdtype, name="k_norm")(k_BxLxKxE)

        q_BxLxHxE = apply_rope(q_BxLxHxE, rope)
        k_BxLxKxE = apply_rope(k_BxLxKxE, rope)
        q_BxLxHxE = constrain(q_BxLxHxE, ("batch", "length", "act_heads", None), self.sharding)

        k_BxKxLxE = k_BxLxKxE.transpose(0, 2, 1, 3)
        v_BxKxLxE = v_BxLxKxE.transpose(0, 2, 1, 3)
        if kv_cache is None:
            keys_BxKxSxE, values_BxKxSxE = k_BxKxLxE, v_BxKxLxE
        else:
            cache_k, cache_v = kv_cache
            at = (0, 0, cache_index, 0)
            keys_BxKxSxE = jax.lax.dynamic_update_slice(cache_k, k_BxKxLxE.astype(cache_k.dtype), at)
            values_BxKxSxE = jax.lax.dynamic_update_slice(cache_v, v_BxKxLxE.astype(cache_v.dtype),
                                                          at)
            kv_cache = (keys_BxKxSxE, values_BxKxSxE)

        out_BxLxHxE = dot_product_attention(q_BxLxHxE, keys_BxKxSxE.astype(dtype),
                                            values_BxKxSxE.astype(dtype), mask_BxLxS)
        o_kernel = param(self, "o_kernel", init, (cfg.num_heads, cfg.head_dim, cfg.hidden_size),
                         ("heads", "head_dim", "embed"), pdtype)
        out_BxLxD = jnp.einsum("blhe,hed->bld", out_BxLxHxE, o_kernel.astype(dtype))
        return out_BxLxD, kv_cache


@jax.custom_vjp
def _widening_matmul_cpu(x_NxD, w_DxF):
    return x_NxD @ w_DxF


def _widening_fwd(x_NxD, w_DxF):
    return x_NxD @ w_DxF, (x_NxD, w_DxF)


def _widening_bwd(residuals, dy_NxF):
    x_NxD, w_DxF = residuals
    dx_NxD = dy_NxF @ w_DxF.T
    # dW^T = dy^T x rather than dW = x^T dy: XLA:CPU transposes the right operand of a matmul that
    # contracts the token axis, and x (N x D) is F/D times smaller than dy (N x F).
    dw_FxD = jnp.einsum("nf,nd->fd", dy_NxF, x_NxD)
    return dx_NxD, dw_FxD.T.astype(w_DxF.dtype)


_widening_matmul_cpu.defvjp(_widening_fwd, _widening_bwd)


def swiglu(gate, up):
    """The SwiGLU activation ``silu(gate) * up`` (any shape; the MLP's hidden layer)."""
    return jax.nn.silu(gate) * up


def widening_matmul(x_BxLxD, w_DxF):
    """``x @ w``; on CPU its weight gradient is computed in the orientation XLA:CPU runs fastest."""
    if jax.default_backend() != "cpu":
        return x_BxLxD @ w_DxF
    lead = x_BxLxD.shape[:-1]
    y = _widening_matmul_cpu(x_BxLxD.reshape(-1, x_BxLxD.shape[-1]), w_DxF)
    return y.reshape(*lead, w_DxF.shape[-1])


class MLP(nn.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    cfg: ModelConfig
    sharding: Sharding | None = None

    @nn.compact
    def __call__(self, x_BxLxD):
        cfg = self.cfg
        dtype, pdtype = cfg.activation_dtype, cfg.weight_dtype
        init = nn.initializers.normal(stddev=0.02)
        shape_in, shape_out = (cfg.hidden_size, cfg.intermediate_size), (cfg.intermediate_size,
                                                                          cfg.hidden_size)
        gate = param(self, "gate_kernel", init, shape_in, ("embed", "mlp"), pdtype)
        up = param(self, "up_kernel", init, shape_in, ("embed", "mlp"), pdtype)
        down = param(self, "down_kernel", init, shape_out, ("mlp", "embed"), pdtype)
        h_BxLxF = swiglu(widening_matmul(x_BxLxD, gate.astype(dtype)),
                         widening_matmul(x_BxLxD, up.astype(dtype)))
        h_BxLxF = constrain(h_BxLxF, ("batch", "length", "act_mlp"), self.sharding)
        return h_BxLxF @ down.astype(dtype)
