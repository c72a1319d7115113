"""The one-token decode step for CPU rollouts: fused weights, shared RoPE, one mask per step.

It is the decoder of ``r1jax.models.decoder`` for one new token per row against a KV cache, built
from the same layer functions (``layers.rms_norm``, ``apply_rope``, ``grouped_query_attention``,
``swiglu``, ``embed``; a parity test compares it with ``models.forward``), arranged for the CPU,
where every op of the decode loop is a separate kernel call and, at rollout batch sizes, the
calls cost more than the FLOPs:

* q/k/v are one matmul and gate/up another (their weights concatenated once per rollout by
  ``prepare_weights``);
* RoPE's cos/sin are computed once per rollout for every step (a table the loop slices), and the
  attention scale is folded into the rotation of q;
* the attention mask comes from the prompt mask and the step number, built once per step;
* keys are cached transposed, ``[B, K, E, S]``, so that the scores are a plain matmul (with the
  ``[B, K, S, E]`` layout the CPU matmul transposes the whole key cache at every step); values stay
  ``[B, K, S, E]``. Both are written in place at the step's slot.

Accelerators fuse these on their own, and concatenating weights would hold a second copy of them,
so the rollout engine uses this step on CPU only (``generate(unstack_params=...)``).

A mixture-of-experts layer runs ``moe.moe_ffn`` on its parameters as they are (the router and the
grouped expert matmuls; there is nothing to fuse), so the engines decode MoE models unchanged.

Multi-head Latent Attention (DeepSeek-V3) decodes against a latent cache: per layer the latents
``[B, S, R]`` and rope keys ``[B, S, Er]`` (``models.LatentCache``), in that layout (no transpose),
with kv_b_proj absorbed into the query and the output (``mla.mla_decode_token``). ``decode_step``,
``to_decode_cache`` and ``grow_cache`` take either cache; the per-layer pair is then
``(latents, rope_keys)`` where the dense cache has ``(keys, values)``.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp

from r1jax.models.cache import CACHE_AXES, LATENT_CACHE_AXES, KVCache, LatentCache
from r1jax.models.config import ModelConfig
from r1jax.models.decoder import lm_head_of, unstack_layers
from r1jax.models.layers import apply_rope, embed, grouped_query_attention, rms_norm, swiglu
from r1jax.models.mla import mla_config_of, mla_decode_token
from r1jax.models.moe import moe_ffn
from r1jax.sharding import Sharding, constrain

KEY_CACHE_AXES = ("batch", "act_kv_heads", None, "cache_length")


def to_decode_cache(cache: KVCache | LatentCache, sharding: Sharding | None = None):
    """``(keys [B, K, E, S], values [B, K, S, E])`` per layer from a ``models.KVCache``; from a
    ``models.LatentCache``, its ``(latents [B, S, R], rope_keys [B, S, Er])`` as they are."""
    if isinstance(cache, LatentCache):
        return cache.latents, cache.rope_keys
    keys = tuple(constrain(k.transpose(0, 1, 3, 2), KEY_CACHE_AXES, sharding) for k in cache.keys)
    return keys, cache.values


def grow_cache(keys, values, length: int, sharding: Sharding | None = None):
    """The decode cache with empty slots appended up to ``length`` slots (a latent cache's
    arrays are 3-D, ``[B, S, ·]``; a dense cache's 4-D)."""
    pad = lambda x, axis: jnp.pad(  # noqa: E731
        x, [(0, length - x.shape[axis]) if a == axis else (0, 0) for a in range(x.ndim)])
    if keys and keys[0].ndim == 3:
        return tuple(tuple(constrain(pad(x, 1), LATENT_CACHE_AXES, sharding) for x in arrays)
                     for arrays in (keys, values))
    return (tuple(constrain(pad(k, 3), KEY_CACHE_AXES, sharding) for k in keys),
            tuple(constrain(pad(v, 2), CACHE_AXES, sharding) for v in values))


@flax.struct.dataclass
class LayerWeights:
    """One layer's weights in the decode layout (``C = (H + 2K)·E``: q heads, k heads, v heads);
    an MLA layer has its attention parameters in ``mla`` and None in the five after the norm."""

    attn_norm_D: jax.Array
    qkv_DxC: Any  # [D, C], or the (q, k, v) kernels unfused
    qkv_bias_C: jax.Array | None
    q_norm_E: jax.Array | None
    k_norm_E: jax.Array | None
    o_NxD: jax.Array | None  # N = H·E
    mlp_norm_D: jax.Array
    gate_up_DxF2: Any  # gate columns, then up columns (or the (gate, up) kernels unfused)
    down_FxD: jax.Array | None
    moe: Any = None  # a MoE layer's ``moe_ffn`` parameters (and no gate/up/down above)
    mla: Any = None  # an MLA layer's attention parameters (``mla.MultiHeadLatentAttention``'s)


@flax.struct.dataclass
class DecodeWeights:
    embedding_VxD: jax.Array
    layers: tuple[LayerWeights, ...]
    final_norm_D: jax.Array
    lm_head_DxV: jax.Array


def _matmul(x, w):
    """``x @ w`` for a fused kernel, or the concatenated products of unfused ones."""
    if isinstance(w, tuple):
        return jnp.concatenate([x @ part for part in w], axis=-1)
    return x @ w


def prepare_weights(cfg: ModelConfig, params: Any, fuse: bool = True) -> DecodeWeights:
    """The decode layout of ``params`` (stacked or unstacked layers), built once per call;
    ``fuse=False`` keeps q/k/v and gate/up apart (no second copy of the weights: accelerators)."""
    dtype = cfg.activation_dtype
    dim = cfg.hidden_size

    def layer(p):
        attn = p["attn"]
        moe, gate_up, down = p.get("moe"), None, None
        if moe is None:
            mlp = p["mlp"]
            gate_up = [mlp["gate_kernel"].astype(dtype), mlp["up_kernel"].astype(dtype)]
            gate_up = jnp.concatenate(gate_up, 1) if fuse else tuple(gate_up)
            down = mlp["down_kernel"].astype(dtype)
        if cfg.is_mla:  # nothing to fuse: MLA's projections are chained, not side by side
            return LayerWeights(p["attn_norm"]["scale"], None, None, None, None, None,
                                p["mlp_norm"]["scale"], gate_up, down, moe, attn)
        flat = lambda name: attn[name].reshape(dim, -1).astype(dtype)  # noqa: E731
        bias = None
        if cfg.qkv_bias:
            bias = jnp.concatenate([attn[f"{n}_bias"].reshape(-1) for n in "qkv"]).astype(dtype)
        qkv = [flat("q_kernel"), flat("k_kernel"), flat("v_kernel")]
        return LayerWeights(
            attn_norm_D=p["attn_norm"]["scale"],
            qkv_DxC=jnp.concatenate(qkv, 1) if fuse else tuple(qkv),
            qkv_bias_C=bias,
            q_norm_E=attn["q_norm"]["scale"] if cfg.qk_norm else None,
            k_norm_E=attn["k_norm"]["scale"] if cfg.qk_norm else None,
            o_NxD=attn["o_kernel"].reshape(-1, dim).astype(dtype),
            mlp_norm_D=p["mlp_norm"]["scale"],
            gate_up_DxF2=gate_up,
            down_FxD=down,
            moe=moe,
        )

    layers = unstack_layers(params)["layers"]
    return DecodeWeights(params["embedding"], tuple(layer(p) for p in layers),
                         params["final_norm"]["scale"], lm_head_of(cfg, params))


def decode_step(cfg: ModelConfig, w: DecodeWeights, token_B, rope, slot, valid_BxS, keys, values,
                sharding: Sharding | None = None, with_experts: bool = False):
    """Logits ``[B, V]`` (float32) for one new token per row, written to cache slot ``slot``.

    ``rope`` is ``layers.rope_tables`` of the new tokens' positions; ``valid_BxS`` marks the cache
    slots each row may attend to (its prompt, and every generated slot up to and including
    ``slot``); ``keys`` are per-layer ``[B, K, E, S]`` and ``values`` ``[B, K, S, E]`` (see
    ``to_decode_cache``); an MLA model's are its ``latents`` and ``rope_keys``. Returns
    ``(logits, keys, values)``, and with ``with_experts`` the experts each MoE layer chose for
    the token (``decode_step_with``) after them.
    """
    dtype = cfg.activation_dtype
    if cfg.is_mla:
        mla_cfg = mla_config_of(cfg)

        def attend_latent(h_BxD, p, cache):
            return mla_decode_token(mla_cfg, p, h_BxD, rope, slot, valid_BxS, cache, sharding)

        logits_BxV, caches, experts_BxYxA = decode_step_with(
            cfg, w, token_B, rope, attend_latent, tuple(zip(keys, values)), sharding)
        out = logits_BxV, tuple(k for k, _ in caches), tuple(v for _, v in caches)
        return out + (experts_BxYxA,) if with_experts else out

    def attend(q_BxKxQxE, k_BxKxE, v_BxKxE, cache):
        k_cache, v_cache = cache
        k_cache = jax.lax.dynamic_update_slice(
            k_cache, k_BxKxE[:, :, :, None].astype(k_cache.dtype), (0, 0, 0, slot))
        v_cache = jax.lax.dynamic_update_slice(
            v_cache, v_BxKxE[:, :, None].astype(v_cache.dtype), (0, 0, slot, 0))
        k_cache = constrain(k_cache, KEY_CACHE_AXES, sharding)
        v_cache = constrain(v_cache, CACHE_AXES, sharding)
        out = grouped_query_attention(q_BxKxQxE, k_cache.astype(dtype), v_cache, valid_BxS,
                                      keys_transposed=True)
        return out, (k_cache, v_cache)

    logits_BxV, caches, experts_BxYxA = decode_step_with(cfg, w, token_B, rope, attend,
                                                         tuple(zip(keys, values)), sharding)
    out = logits_BxV, tuple(k for k, _ in caches), tuple(v for _, v in caches)
    return out + (experts_BxYxA,) if with_experts else out


def decode_step_with(cfg: ModelConfig, w: DecodeWeights, token_B, rope, attend, caches,
                     sharding: Sharding | None = None):
    """The decode step with the attention given: ``attend(q_BxKxQxE, k_BxKxE, v_BxKxE, cache)``
    stores the new key and value in its layer's ``cache`` (any pytree, one per layer in
    ``caches``) and returns ``(attention output [B, K, Q, E], updated cache)``; q arrives rotated
    and scaled by ``E^-0.5``, k rotated. Returns ``(logits [B, V] float32, updated caches,
    experts [B, Y_moe, A] int32)``: the experts each MoE layer chose for the token (router
    replay records them; None for a dense model, and unused they cost nothing: the routing is
    computed anyway and XLA drops an output nobody reads).
    The dense cache (``decode_step``) and the paged pool (``r1jax.rollout.paged``) both use it.
    For an MLA model ``attend(h_BxD, mla_params, cache)`` gets the normed hidden state and the
    layer's attention parameters and returns ``(attention output [B, D], updated cache)``."""
    dtype, eps = cfg.activation_dtype, cfg.rms_norm_eps
    x_BxD = embed(cfg, w.embedding_VxD, token_B, sharding)
    new_caches, experts = [], []
    for lw, cache in zip(w.layers, caches):
        h_BxD = rms_norm(x_BxD, lw.attn_norm_D, eps)
        if lw.mla is not None:
            out_BxD, cache = attend(h_BxD, lw.mla, cache)
            x_BxD = x_BxD + out_BxD.astype(dtype)
        else:
            x_BxD, cache = _attention(cfg, lw, x_BxD, h_BxD, rope, attend, cache)
        h_BxD = rms_norm(x_BxD, lw.mlp_norm_D, eps)
        if lw.moe is not None:
            y_BxD, stats = moe_ffn(cfg, lw.moe, h_BxD, sharding=sharding)
            x_BxD = x_BxD + y_BxD
            experts.append(stats.expert_indices)
        else:
            gate_BxF, up_BxF = jnp.split(_matmul(h_BxD, lw.gate_up_DxF2), 2, axis=-1)
            x_BxD = x_BxD + swiglu(gate_BxF, up_BxF) @ lw.down_FxD
        x_BxD = constrain(x_BxD, ("batch", "act_embed"), sharding)
        new_caches.append(cache)
    hidden_BxD = rms_norm(x_BxD, w.final_norm_D, eps)
    logits_BxV = jnp.dot(hidden_BxD, w.lm_head_DxV, preferred_element_type=jnp.float32)
    experts_BxYxA = jnp.stack(experts, axis=1) if experts else None
    return logits_BxV, tuple(new_caches), experts_BxYxA


def _attention(cfg: ModelConfig, lw: LayerWeights, x_BxD, h_BxD, rope, attend, cache):
    """Grouped-query attention of one layer: ``(x + attention output, updated cache)``."""
    batch = h_BxD.shape[0]
    heads, kv, head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    qkv_BxC = _matmul(h_BxD, lw.qkv_DxC)
    if lw.qkv_bias_C is not None:
        qkv_BxC = qkv_BxC + lw.qkv_bias_C
    qkv_BxCh = qkv_BxC.reshape(batch, heads + 2 * kv, head_dim)
    q_BxHxE, k_BxKxE, v_BxKxE = jnp.split(qkv_BxCh, [heads, heads + kv], axis=1)
    if cfg.qk_norm:
        q_BxHxE = rms_norm(q_BxHxE, lw.q_norm_E, cfg.rms_norm_eps)
        k_BxKxE = rms_norm(k_BxKxE, lw.k_norm_E, cfg.rms_norm_eps)
    q_BxHxE = apply_rope(q_BxHxE, rope, head_dim ** -0.5)
    k_BxKxE = apply_rope(k_BxKxE, rope)
    q_BxKxQxE = q_BxHxE.reshape(batch, kv, heads // kv, head_dim)
    out_BxKxQxE, cache = attend(q_BxKxQxE, k_BxKxE, v_BxKxE, cache)
    out_BxN = out_BxKxQxE.reshape(batch, heads * head_dim).astype(cfg.activation_dtype)
    return x_BxD + out_BxN @ lw.o_NxD, cache
