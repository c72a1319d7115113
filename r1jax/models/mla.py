"""Multi-head Latent Attention (DeepSeek-V2/V3), with a latent KV cache for decoding.

For a token with hidden state x (``R`` = kv_lora_rank, ``En``/``Er``/``Ev`` = the no-rope, rope
and value head dims, ``Rq`` = q_lora_rank):

    q_h   = [q_nope_h ; q_pe_h] = W_Q x, or W_QB · norm(W_QA x) with a q LoRA      [En + Er]
    c     = norm(W_DKV x)                  the latent, shared by every head          [R]
    k_pe  = rope(W_KR x)                   the one rope key, shared by every head    [Er]
    k_h   = [W_UK_h c ; k_pe],   v_h = W_UV_h c              (W_UK_h, W_UV_h: kv_b_proj's parts)
    out   = W_O · concat_h softmax_s(s · q_h·k_h) v_h,   s = mscale² / sqrt(En + Er)

``mla_attention`` (training and prefill) materializes k_h and v_h for every token. Decoding needs
only c and k_pe: ``q_h·k_h = (W_UK_hᵀ q_nope_h)·c + q_pe_h·k_pe`` and ``Σ p v_h = W_UV_h Σ p c``,
so ``mla_attention_cached`` folds W_UK into the query, attends over the cached latents as one
shared key/value head of width R (+ Er for the keys), and applies W_UV after the weighted sum.

Cache per token per layer: ``R + Er`` values (DeepSeek-V3: 512 + 64 = 576) instead of full keys
and values' ``H·(En + Er) + H·Ev`` (128 · (192 + 128) = 40,960): 71× smaller.

The math lives in functions of a parameter dict (the ``MultiHeadLatentAttention`` module's own
params), so the training forward and a decode step call the same code. Parameter layout
(``[in, …, out]`` like the rest of r1jax; Hugging Face names in brackets):

    q_kernel [D, H, En+Er] (q_proj)  — or q_a_kernel [D, Rq] (q_a_proj), q_a_bias [Rq],
        q_a_norm/scale [Rq] (q_a_layernorm), q_b_kernel [Rq, H, En+Er] (q_b_proj)
    kv_a_kernel [D, R+Er] (kv_a_proj_with_mqa: latent columns, then rope-key columns),
        kv_a_bias [R+Er], kv_a_norm/scale [R] (kv_a_layernorm)
    kv_b_kernel [R, H, En+Ev] (kv_b_proj: per head, the W_UK columns, then the W_UV ones)
    o_kernel [H, Ev, D] (o_proj), o_bias [D]          (biases only with ``attention_bias``)

Logical axes: the low-rank axes (Rq, R, R+Er) are named ``LATENT_AXIS`` (``"latent"``), which
``r1jax.sharding.DEFAULT_RULES`` replicates.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax.models.cache import LATENT_CACHE_AXES
from r1jax.models.config import ModelConfig
from r1jax.models.layers import (
    MASK_VALUE,
    apply_rope,
    grouped_query_attention,
    param,
    rms_norm,
)
from r1jax.models.yarn import YarnScaling, deinterleave, rope_tables
from r1jax.sharding import Sharding, constrain

# Low-rank widths stay whole on every device: they are small, and splitting the latent would
# put an all-reduce inside every attention score of the decode step.
LATENT_AXIS = "latent"
DTYPES = ("float32", "bfloat16", "float16")

Params = Any


@dataclasses.dataclass(frozen=True)
class MLAConfig:
    """Shape and numerics of one MLA layer (the fields of DeepSeek-V3's ``config.json``).

    ``q_lora_rank=None`` projects queries directly (DeepSeek-V2-Lite); ``rope_scaling`` is YaRN
    or None; ``rope_interleave`` says the checkpoint's rope columns hold interleaved pairs
    (transformers' default for DeepSeek-V3). ``rms_norm_eps`` is the eps of the two latent norms:
    DeepSeek's code builds them with 1e-6 whatever ``config.json``'s ``rms_norm_eps`` says.
    """

    hidden_size: int
    num_heads: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    q_lora_rank: int | None = None
    rope_theta: float = 10_000.0
    rope_scaling: YarnScaling | None = None
    rope_interleave: bool = True
    rms_norm_eps: float = 1e-6
    attention_bias: bool = False
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        for name in ("hidden_size", "num_heads", "kv_lora_rank", "qk_nope_head_dim",
                     "qk_rope_head_dim", "v_head_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"MLAConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.q_lora_rank is not None and int(self.q_lora_rank) < 1:
            raise ValueError(f"MLAConfig.q_lora_rank must be >= 1, or None for a plain q_proj; "
                             f"got {self.q_lora_rank}")
        if self.qk_rope_head_dim % 2:
            raise ValueError(f"MLAConfig.qk_rope_head_dim must be even (RoPE rotates pairs), got "
                             f"{self.qk_rope_head_dim}")
        if not self.rope_theta > 1:
            raise ValueError(f"MLAConfig.rope_theta must be > 1, got {self.rope_theta}")
        if not self.rms_norm_eps > 0:
            raise ValueError(f"MLAConfig.rms_norm_eps must be positive, got {self.rms_norm_eps}")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"MLAConfig.{name} {getattr(self, name)!r} is not one of {DTYPES}")
        if isinstance(self.rope_scaling, dict):
            object.__setattr__(self, "rope_scaling", YarnScaling(**self.rope_scaling))
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, YarnScaling):
            raise ValueError(f"MLAConfig.rope_scaling must be a YarnScaling (or its fields as a "
                             f"dict) or None, got {self.rope_scaling!r}")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def softmax_scale(self) -> float:
        """``qk_head_dim^-0.5``, times YaRN's ``mscale(factor, mscale_all_dim)²`` when set."""
        mscale = 1.0 if self.rope_scaling is None else self.rope_scaling.softmax_mscale
        return self.qk_head_dim ** -0.5 * mscale

    @property
    def cache_width(self) -> int:
        """Values cached per token per layer: the latent and the rope key."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    @property
    def dense_kv_width(self) -> int:
        """Values per token per layer a full K/V cache of the same attention would hold."""
        return self.num_heads * (self.qk_head_dim + self.v_head_dim)

    @property
    def activation_dtype(self) -> Any:
        return jnp.dtype(self.dtype)

    @property
    def weight_dtype(self) -> Any:
        return jnp.dtype(self.param_dtype)


def mla_config_of(cfg: ModelConfig) -> MLAConfig:
    """The attention of a deepseek_v3 ``ModelConfig``. The latent norms' eps is 1e-6 whatever
    ``cfg.rms_norm_eps`` is, as in DeepSeek's and transformers' code."""
    return MLAConfig(
        hidden_size=cfg.hidden_size, num_heads=cfg.num_heads, kv_lora_rank=cfg.kv_lora_rank,
        qk_nope_head_dim=cfg.qk_nope_head_dim, qk_rope_head_dim=cfg.qk_rope_head_dim,
        v_head_dim=cfg.v_head_dim, q_lora_rank=cfg.q_lora_rank, rope_theta=cfg.rope_theta,
        rope_scaling=cfg.rope_scaling, rope_interleave=cfg.rope_interleave,
        attention_bias=cfg.attention_bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype)


def mla_rope_tables(cfg: MLAConfig, positions):
    """``(cos, sin)`` ``[..., 1, Er/2]`` of ``positions`` for the rope parts (YaRN if set)."""
    return rope_tables(cfg.qk_rope_head_dim, cfg.rope_theta, cfg.rope_scaling, positions)


def rotate_rope_part(cfg: MLAConfig, x_BxLxNxEr, rope):
    """RoPE on a rope part ``[..., L, N, Er]`` (N heads, or 1 for the shared key), read in the
    checkpoint's pair layout and returned in the halves layout (``yarn.deinterleave``)."""
    if cfg.rope_interleave:
        x_BxLxNxEr = deinterleave(x_BxLxNxEr)
    return apply_rope(x_BxLxNxEr, rope)


def _dense(x, kernel, bias, dtype):
    """``x @ kernel (+ bias)`` contracting x's last axis with kernel's first."""
    y = jnp.tensordot(x, kernel.astype(dtype), axes=1)
    return y if bias is None else y + bias.astype(dtype)


def mla_queries(cfg: MLAConfig, p: Params, x_BxLxD, rope):
    """``(q_nope [B, L, H, En], q_pe [B, L, H, Er])``; q_pe rotated.

    ``q = W_Q x`` or, with a q LoRA, ``q = W_QB · rms_norm(W_QA x + b)``.
    """
    dtype = cfg.activation_dtype
    if cfg.q_lora_rank is None:
        q_BxLxHxE = _dense(x_BxLxD, p["q_kernel"], None, dtype)
    else:
        q_a_BxLxRq = _dense(x_BxLxD, p["q_a_kernel"], p.get("q_a_bias"), dtype)
        q_a_BxLxRq = rms_norm(q_a_BxLxRq, p["q_a_norm"]["scale"], cfg.rms_norm_eps)
        q_BxLxHxE = _dense(q_a_BxLxRq, p["q_b_kernel"], None, dtype)
    q_nope, q_pe = jnp.split(q_BxLxHxE, [cfg.qk_nope_head_dim], axis=-1)
    return q_nope, rotate_rope_part(cfg, q_pe, rope)


def mla_latents(cfg: MLAConfig, p: Params, x_BxLxD, rope):
    """``(latent [B, L, R], k_pe [B, L, Er])``: what the cache holds per token.

    ``[c' ; k'] = W_DKV x + b``; ``latent = rms_norm(c')``, ``k_pe = rope(k')``.
    """
    kv_a_BxLxC = _dense(x_BxLxD, p["kv_a_kernel"], p.get("kv_a_bias"), cfg.activation_dtype)
    latent_BxLxR, k_pe_BxLxEr = jnp.split(kv_a_BxLxC, [cfg.kv_lora_rank], axis=-1)
    latent_BxLxR = rms_norm(latent_BxLxR, p["kv_a_norm"]["scale"], cfg.rms_norm_eps)
    k_pe_BxLxEr = rotate_rope_part(cfg, k_pe_BxLxEr[..., None, :], rope)[..., 0, :]
    return latent_BxLxR, k_pe_BxLxEr


def _output(cfg: MLAConfig, p: Params, out_BxLxHxEv):
    """``W_O · concat_h out_h (+ b)``."""
    dtype = cfg.activation_dtype
    y = jnp.einsum("blhv,hvd->bld", out_BxLxHxEv.astype(dtype), p["o_kernel"].astype(dtype))
    return y if p.get("o_bias") is None else y + p["o_bias"].astype(dtype)


def mla_attention(cfg: MLAConfig, p: Params, x_BxLxD, rope, mask_BxLxS,
                  sharding: Sharding | None = None):
    """The full-sequence forward: ``[B, L, D]`` outputs, keys and values materialized per head.

    ``rope``: ``mla_rope_tables`` of the tokens' positions; ``mask_BxLxS`` (S = L): True where a
    query may see a key (``layers.attention_weights_mask``: causal and padding).
    """
    dtype = cfg.activation_dtype
    q_nope, q_pe = mla_queries(cfg, p, x_BxLxD, rope)
    q_BxLxHxE = constrain(jnp.concatenate([q_nope, q_pe], axis=-1),
                          ("batch", "length", "act_heads", None), sharding)
    latent_BxLxR, k_pe_BxLxEr = mla_latents(cfg, p, x_BxLxD, rope)
    kv_BxLxHxC = jnp.einsum("blr,rhc->blhc", latent_BxLxR, p["kv_b_kernel"].astype(dtype))
    k_nope_BxLxHxEn, v_BxLxHxEv = jnp.split(kv_BxLxHxC, [cfg.qk_nope_head_dim], axis=-1)
    k_pe_BxLxHxEr = jnp.broadcast_to(k_pe_BxLxEr[:, :, None], (*k_nope_BxLxHxEn.shape[:3],
                                                                cfg.qk_rope_head_dim))
    k_BxLxHxE = jnp.concatenate([k_nope_BxLxHxEn, k_pe_BxLxHxEr], axis=-1)
    # One query per "KV head" (K = H, Q = 1): grouped_query_attention's layout.
    out = grouped_query_attention(q_BxLxHxE.transpose(0, 2, 1, 3)[:, :, None],
                                  k_BxLxHxE.transpose(0, 2, 1, 3), v_BxLxHxEv.transpose(0, 2, 1, 3),
                                  mask_BxLxS, scale=cfg.softmax_scale)
    return _output(cfg, p, out[:, :, 0].transpose(0, 2, 1, 3))


def latent_attention(q_latent_BxLxHxR, q_pe_BxLxHxEr, latent_BxSxR, k_pe_BxSxEr, mask_BxLxS,
                     scale: float):
    """Attention over the latent cache, as one key/value head shared by all H query heads.

    ``scores = s · (q_latent · latent + q_pe · k_pe)``, softmax over S in float32 where
    ``mask_BxLxS``, and returns ``Σ_s p_s · latent_s`` ``[B, L, H, R]`` (still to be multiplied
    by W_UV).
    """
    def scores_of(q, k):
        return jnp.einsum("blhe,bse->bhls", q, k, preferred_element_type=jnp.float32)

    scores = scores_of(q_latent_BxLxHxR, latent_BxSxR) + scores_of(q_pe_BxLxHxEr, k_pe_BxSxEr)
    scores = jnp.where(mask_BxLxS[:, None], scores * scale, MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(latent_BxSxR.dtype)
    return jnp.einsum("bhls,bsr->blhr", probs, latent_BxSxR)


def init_latent_cache(cfg: MLAConfig, batch_size: int, max_length: int, dtype=None):
    """An empty latent cache ``(latent [B, S, R], k_pe [B, S, Er])`` for one layer."""
    dtype = cfg.activation_dtype if dtype is None else dtype
    return (jnp.zeros((batch_size, max_length, cfg.kv_lora_rank), dtype),
            jnp.zeros((batch_size, max_length, cfg.qk_rope_head_dim), dtype))


def mla_attention_cached(cfg: MLAConfig, p: Params, x_BxLxD, rope, mask_BxLxS, cache, cache_index,
                         sharding: Sharding | None = None):
    """New tokens against the latent cache, with kv_b_proj absorbed: ``(out [B, L, D], cache)``.

    The new tokens' latents and rope keys are written at slot ``cache_index`` of ``cache``
    (``init_latent_cache``); ``mask_BxLxS`` says which slots each new token sees (causal and
    valid). ``q_latent_h = W_UK_hᵀ q_nope_h``; after attention, ``out_h = W_UV_h · Σ p c``.
    L = 1 is the decode step; any L works (a prefill straight into the cache).
    """
    dtype = cfg.activation_dtype
    q_nope_BxLxHxEn, q_pe_BxLxHxEr = mla_queries(cfg, p, x_BxLxD, rope)
    latent_BxLxR, k_pe_BxLxEr = mla_latents(cfg, p, x_BxLxD, rope)
    cache_latent, cache_k_pe = cache
    at = (0, cache_index, 0)
    cache_latent = constrain(jax.lax.dynamic_update_slice(
        cache_latent, latent_BxLxR.astype(cache_latent.dtype), at), LATENT_CACHE_AXES, sharding)
    cache_k_pe = constrain(jax.lax.dynamic_update_slice(
        cache_k_pe, k_pe_BxLxEr.astype(cache_k_pe.dtype), at), LATENT_CACHE_AXES, sharding)
    w_uk_RxHxEn, w_uv_RxHxEv = jnp.split(p["kv_b_kernel"].astype(dtype), [cfg.qk_nope_head_dim],
                                         axis=-1)
    q_latent_BxLxHxR = jnp.einsum("blhn,rhn->blhr", q_nope_BxLxHxEn, w_uk_RxHxEn)
    q_latent_BxLxHxR = constrain(q_latent_BxLxHxR, ("batch", "length", "act_heads", None), sharding)
    out_BxLxHxR = latent_attention(q_latent_BxLxHxR, q_pe_BxLxHxEr, cache_latent.astype(dtype),
                                   cache_k_pe.astype(dtype), mask_BxLxS, cfg.softmax_scale)
    out_BxLxHxEv = jnp.einsum("blhr,rhv->blhv", out_BxLxHxR, w_uv_RxHxEv)
    return _output(cfg, p, out_BxLxHxEv), (cache_latent, cache_k_pe)


def absorbed_query(cfg: MLAConfig, p: Params, x_BxD, rope):
    """One token per row as a single-head attention over its cache entries (the paged engine's
    form): ``(q [B, H, R + Er], entry [B, R + Er])``.

    ``q_h = s · [W_UK_hᵀ q_nope_h ; q_pe_h]`` (the softmax scale folded in) and ``entry =
    [latent ; k_pe]``, so that ``q_h · entry_j`` is the score of head h for token j, and the
    entries' first R columns weighted by the softmax are ``Σ p c`` (``absorbed_output``). Keys
    and values are then the same vectors: the cache holds each once. ``rope``: tables of
    ``[B]`` positions."""
    rope = tuple(t[:, None] for t in rope)
    q_nope_Bx1xHxEn, q_pe_Bx1xHxEr = mla_queries(cfg, p, x_BxD[:, None], rope)
    latent_Bx1xR, k_pe_Bx1xEr = mla_latents(cfg, p, x_BxD[:, None], rope)
    w_uk_RxHxEn = p["kv_b_kernel"][..., :cfg.qk_nope_head_dim].astype(cfg.activation_dtype)
    q_latent_BxHxR = jnp.einsum("bhn,rhn->bhr", q_nope_Bx1xHxEn[:, 0], w_uk_RxHxEn)
    q_BxHxC = jnp.concatenate([q_latent_BxHxR, q_pe_Bx1xHxEr[:, 0]], axis=-1)
    entry_BxC = jnp.concatenate([latent_Bx1xR[:, 0], k_pe_Bx1xEr[:, 0]], axis=-1)
    return q_BxHxC * cfg.softmax_scale, entry_BxC


def absorbed_output(cfg: MLAConfig, p: Params, out_BxHxC):
    """The layer's output ``[B, D]`` from the softmax-weighted sum of entries ``[B, H, R + Er]``
    (``absorbed_query``): ``W_O · concat_h W_UV_h (Σ p c)_h``; the rope columns are dropped."""
    dtype = cfg.activation_dtype
    w_uv_RxHxEv = p["kv_b_kernel"][..., cfg.qk_nope_head_dim:].astype(dtype)
    out_BxHxEv = jnp.einsum("bhr,rhv->bhv", out_BxHxC[..., :cfg.kv_lora_rank].astype(dtype),
                            w_uv_RxHxEv)
    return _output(cfg, p, out_BxHxEv[:, None])[:, 0]


def mla_decode_token(cfg: MLAConfig, p: Params, x_BxD, rope, slot, valid_BxS, cache,
                     sharding: Sharding | None = None):
    """One new token per row (``[B, D]``) written at cache slot ``slot``, seeing the slots
    ``valid_BxS`` marks (its prompt and every generated slot up to ``slot``, as in
    ``r1jax.models.decode``): ``(out [B, D], cache)``. ``rope``: tables of ``[B]`` positions."""
    rope = tuple(t[:, None] for t in rope)
    out_Bx1xD, cache = mla_attention_cached(cfg, p, x_BxD[:, None], rope, valid_BxS[:, None],
                                            cache, slot, sharding)
    return out_Bx1xD[:, 0], cache


class _Scale(nn.Module):
    """A norm's ``scale`` vector alone, so MLA's params nest like ``layers.RMSNorm``'s."""

    size: int
    param_dtype: Any

    @nn.compact
    def __call__(self):
        return param(self, "scale", nn.initializers.ones, (self.size,), (LATENT_AXIS,),
                     self.param_dtype)


class MultiHeadLatentAttention(nn.Module):
    """MLA as a Flax module: declares the parameters (layout in the module docstring) and runs
    ``mla_attention``, or ``mla_attention_cached`` given a cache — the call signature of
    ``layers.Attention``: ``(x, rope, mask, kv_cache=None, cache_index=None) -> (out, cache)``."""

    cfg: MLAConfig
    sharding: Sharding | None = None

    @nn.compact
    def __call__(self, x_BxLxD, rope, mask_BxLxS, kv_cache=None, cache_index=None):
        cfg, pdtype = self.cfg, self.cfg.weight_dtype
        init = nn.initializers.normal(stddev=0.02)
        zeros = nn.initializers.zeros
        D, H = cfg.hidden_size, cfg.num_heads
        p: dict[str, Any] = {}
        if cfg.q_lora_rank is None:
            p["q_kernel"] = param(self, "q_kernel", init, (D, H, cfg.qk_head_dim),
                                  ("embed", "heads", "head_dim"), pdtype)
        else:
            rq = cfg.q_lora_rank
            p["q_a_kernel"] = param(self, "q_a_kernel", init, (D, rq), ("embed", LATENT_AXIS),
                                    pdtype)
            if cfg.attention_bias:
                p["q_a_bias"] = param(self, "q_a_bias", zeros, (rq,), (LATENT_AXIS,), pdtype)
            p["q_a_norm"] = {"scale": _Scale(rq, pdtype, name="q_a_norm")()}
            p["q_b_kernel"] = param(self, "q_b_kernel", init, (rq, H, cfg.qk_head_dim),
                                    (LATENT_AXIS, "heads", "head_dim"), pdtype)
        p["kv_a_kernel"] = param(self, "kv_a_kernel", init, (D, cfg.cache_width),
                                 ("embed", LATENT_AXIS), pdtype)
        if cfg.attention_bias:
            p["kv_a_bias"] = param(self, "kv_a_bias", zeros, (cfg.cache_width,), (LATENT_AXIS,),
                                   pdtype)
        p["kv_a_norm"] = {"scale": _Scale(cfg.kv_lora_rank, pdtype, name="kv_a_norm")()}
        p["kv_b_kernel"] = param(self, "kv_b_kernel", init,
                                 (cfg.kv_lora_rank, H, cfg.qk_nope_head_dim + cfg.v_head_dim),
                                 (LATENT_AXIS, "heads", "head_dim"), pdtype)
        p["o_kernel"] = param(self, "o_kernel", init, (H, cfg.v_head_dim, D),
                              ("heads", "head_dim", "embed"), pdtype)
        if cfg.attention_bias:
            p["o_bias"] = param(self, "o_bias", zeros, (D,), ("embed",), pdtype)
        if kv_cache is None:
            return mla_attention(cfg, p, x_BxLxD, rope, mask_BxLxS, self.sharding), None
        return mla_attention_cached(cfg, p, x_BxLxD, rope, mask_BxLxS, kv_cache, cache_index,
                                    self.sharding)


def init(cfg: MLAConfig, rng: jax.Array) -> Params:
    """Random parameters of one MLA layer (plain arrays)."""
    x = jnp.zeros((1, 1, cfg.hidden_size), cfg.activation_dtype)
    rope = mla_rope_tables(cfg, jnp.zeros((1, 1), jnp.int32))
    boxed = MultiHeadLatentAttention(cfg).init(rng, x, rope, jnp.ones((1, 1, 1), bool))
    return nn.meta.unbox(boxed["params"])
