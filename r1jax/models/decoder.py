"""The decoder (Llama 3.x / Qwen2 / Qwen2.5 / Qwen3 / Qwen3-MoE / DeepSeek-V3) and its functional
API. DeepSeek-V3's blocks run Multi-head Latent Attention (``r1jax.models.mla``) where the others
run grouped-query attention, and cache latents instead of keys and values (``models.cache``).

Layers are stacked with ``nn.scan`` so a 80-layer model compiles as fast as a 2-layer one; every
parameter carries logical axis names (with a leading ``layers`` axis inside the stack). A dense
decoder has one stack, ``layers``; a mixture of experts has its MoE blocks there and, when its
first layers are dense (``first_k_dense_replace``), those in a second stack, ``dense_layers``,
which runs first. The forward returns the final hidden states and the LM head separately, so that
token log-probs can be computed blockwise (``kernels.token_logprobs``) without materializing
``[tokens × vocab]`` logits.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

# The caches live in ``models.cache``; imported here for ``forward`` and re-exported.
from r1jax.models.cache import (CACHE_AXES, KVCache, LatentCache, cache_axes,  # noqa: F401
                                init_cache)
from r1jax.models.config import ModelConfig
from r1jax.models.layers import (MLP, Attention, RMSNorm, attention_weights_mask, embed, param,
                                 rms_norm, rope_tables)
from r1jax.models.mla import MultiHeadLatentAttention, mla_config_of
from r1jax.models.moe import MoE, MoEStats
from r1jax.sharding import Sharding, constrain, logical_axes_of

Params = Any

_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + ffn(norm(x))``; the FFN is
    the dense SwiGLU ``mlp``, or with ``moe`` the mixture of experts ``moe``."""

    cfg: ModelConfig
    sharding: Sharding | None = None
    moe: bool = False

    @nn.compact
    def __call__(self, x_BxLxD, rope, mask_BxLxS, cache_index=None, kv_cache=None,
                 valid_BxL=None, expert_indices_BxLxA=None):
        """``rope``: ``layers.rope_tables`` of the tokens' positions; ``valid_BxL`` (real tokens)
        and ``expert_indices_BxLxA`` (router replay) matter to MoE blocks only. Returns
        ``(x, kv_cache, MoEStats or None)``."""
        cfg = self.cfg
        norm = lambda name: RMSNorm(cfg.rms_norm_eps, "embed", cfg.weight_dtype, name=name)  # noqa: E731
        if cfg.is_mla:
            attention = MultiHeadLatentAttention(mla_config_of(cfg), self.sharding, name="attn")
        else:
            attention = Attention(cfg, self.sharding, name="attn")
        attn_out, kv_cache = attention(
            norm("attn_norm")(x_BxLxD), rope, mask_BxLxS, kv_cache, cache_index
        )
        x_BxLxD = x_BxLxD + attn_out
        stats = None
        if self.moe:
            ffn_out, stats = MoE(cfg, self.sharding, name="moe")(
                norm("mlp_norm")(x_BxLxD), valid_BxL, expert_indices_BxLxA)
        else:
            ffn_out = MLP(cfg, self.sharding, name="mlp")(norm("mlp_norm")(x_BxLxD))
        x_BxLxD = x_BxLxD + ffn_out
        return constrain(x_BxLxD, ("batch", "length", "act_embed"), self.sharding), kv_cache, stats


class _ScanBlock(Block):
    """``Block`` in the ``(carry, *inputs) -> (carry, stats)`` form ``nn.scan`` expects."""

    def __call__(self, x_BxLxD, rope, mask_BxLxS, valid_BxL, expert_indices_BxLxA):
        x_BxLxD, _, stats = super().__call__(x_BxLxD, rope, mask_BxLxS, valid_BxL=valid_BxL,
                                             expert_indices_BxLxA=expert_indices_BxLxA)
        return x_BxLxD, stats


def layer_stacks(cfg: ModelConfig) -> tuple[tuple[str, int, bool], ...]:
    """The stacks of layers in the order they run: ``(params key, layers, is MoE)``."""
    if not cfg.is_moe:
        return (("layers", cfg.num_layers, False),)
    dense = (("dense_layers", cfg.num_dense_layers, False),) if cfg.num_dense_layers else ()
    return dense + (("layers", cfg.num_moe_layers, True),)


class Decoder(nn.Module):
    """Token embedding → ``num_layers`` blocks (one ``nn.scan``) → final RMSNorm.

    Returns ``(hidden_BxLxD, lm_head_DxV)``. This is the training/full-sequence forward and the
    definition of the parameter tree; cached decoding runs the same ``Block`` per layer in
    ``forward`` instead (and the CPU rollout the one-token ``r1jax.models.decode`` step).
    """

    cfg: ModelConfig
    sharding: Sharding | None = None

    @nn.compact
    def __call__(self, tokens_BxL, rope, mask_BxLxS, valid_BxL=None, expert_indices=None):
        """``rope``: ``layers.rope_tables`` of the tokens' positions; ``expert_indices``
        (``[Y_moe, B, L, A]``) replays a routing. Returns ``(hidden, lm_head, MoEStats of the
        MoE layers stacked, or None)``."""
        cfg = self.cfg
        init = nn.initializers.normal(stddev=0.02)
        embedding_VxD = param(self, "embedding", init, (cfg.vocab_size, cfg.hidden_size),
                              ("vocab", "embed"), cfg.weight_dtype)
        x_BxLxD = embed(cfg, embedding_VxD, tokens_BxL, self.sharding)
        block = _ScanBlock
        if cfg.remat != "none":
            block = nn.remat(_ScanBlock, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=False)
        stats = None
        for name, count, is_moe in layer_stacks(cfg):
            layers = nn.scan(
                block,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0),
                length=count,
                unroll=min(cfg.scan_unroll, count),
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            replay = expert_indices if is_moe else None
            x_BxLxD, layer_stats = layers(cfg, self.sharding, is_moe, name=name)(
                x_BxLxD, rope, mask_BxLxS, valid_BxL, replay)
            stats = layer_stats if is_moe else stats
        hidden_BxLxD = RMSNorm(cfg.rms_norm_eps, "embed", cfg.weight_dtype, name="final_norm")(
            x_BxLxD)
        if cfg.tie_embeddings:
            return hidden_BxLxD, embedding_VxD.T, stats
        lm_head_DxV = param(self, "lm_head", init, (cfg.hidden_size, cfg.vocab_size),
                            ("embed", "vocab"), cfg.weight_dtype)
        return hidden_BxLxD, lm_head_DxV, stats


def lm_head_of(cfg: ModelConfig, params: Params):
    """The LM head ``[D, V]`` of ``params`` (the embedding's transpose when they are tied)."""
    return params["embedding"].T if cfg.tie_embeddings else params["lm_head"]


def unstack_layers(params: Params) -> Params:
    """Params with the stacked ``layers`` split into a tuple of per-layer trees (in running
    order; a MoE decoder's ``dense_layers`` come first and the key is dropped).

    Cached decoding accepts either form; splitting once before a decode loop avoids slicing every
    layer's weights out of the stack at every step (a copy per layer per token on CPU).
    """
    if isinstance(params["layers"], (tuple, list)):
        return params
    unstacked = []
    for key in ("dense_layers", "layers"):
        if key in params:
            stack = params[key]
            count = jax.tree.leaves(stack)[0].shape[0]
            unstacked += [jax.tree.map(lambda x, i=i: x[i], stack) for i in range(count)]
    rest = {k: v for k, v in params.items() if k != "dense_layers"}
    return {**rest, "layers": tuple(unstacked)}


def layer_is_moe(cfg: ModelConfig) -> tuple[bool, ...]:
    """For each layer in running order, whether it is a mixture of experts."""
    return tuple(is_moe for _, count, is_moe in layer_stacks(cfg) for _ in range(count))


class ForwardOutput(NamedTuple):
    hidden_BxLxD: jax.Array
    lm_head_DxV: jax.Array
    cache: KVCache | LatentCache | None
    # MoE decoders: each MoE layer's load-balancing statistics, stacked (leading axis Y_moe);
    # ``expert_indices`` is ``[Y_moe, B, L, A]``, the ``expert_indices`` argument of a replay.
    moe_stats: MoEStats | None = None


def positions_from_mask(attention_mask_BxL, offset_B=None):
    """Position of each real token = number of real tokens before it (left padding skipped)."""
    positions_BxL = jnp.cumsum(attention_mask_BxL.astype(jnp.int32), axis=1) - 1
    if offset_B is not None:
        positions_BxL = positions_BxL + offset_B[:, None]
    return jnp.maximum(positions_BxL, 0)


def forward(
    cfg: ModelConfig,
    params: Params,
    tokens_BxL: jax.Array,
    *,
    attention_mask_BxL: jax.Array | None = None,
    positions_BxL: jax.Array | None = None,
    segment_ids_BxL: jax.Array | None = None,
    cache: KVCache | LatentCache | None = None,
    sharding: Sharding | None = None,
    expert_indices: jax.Array | None = None,
) -> ForwardOutput:
    """Run the decoder on ``tokens_BxL``.

    ``attention_mask_BxL`` marks real tokens (left padding is 0). Positions default to the count of
    real tokens before each one, continuing from the cache when one is given. ``segment_ids_BxL``
    confines attention to tokens of the same packed example (positions must then be given).
    With ``cache``, the new tokens are written at ``cache.index`` and attend to every valid slot
    before them; the updated cache is returned. MoE decoders return their load-balancing statistics
    (``moe_stats``); ``expert_indices`` (``[Y_moe, B, L, A]``, e.g. a rollout's
    ``moe_stats.expert_indices``) replays that routing instead of choosing experts (router replay).
    """
    batch, length = tokens_BxL.shape
    if attention_mask_BxL is None:
        mask_BxL = jnp.ones((batch, length), bool)
    else:
        mask_BxL = attention_mask_BxL.astype(bool)
    if cache is None:
        model, variables = Decoder(cfg, sharding), {"params": params}
        if positions_BxL is None:
            rope = rope_tables(cfg, positions_from_mask(mask_BxL), max_position=length)
        else:
            rope = rope_tables(cfg, positions_BxL)
        segments = None if segment_ids_BxL is None else (segment_ids_BxL, segment_ids_BxL)
        query_slots_BxL = jnp.broadcast_to(jnp.arange(length), (batch, length))
        weights_mask = attention_weights_mask(query_slots_BxL, mask_BxL, segments)
        replay = None
        if expert_indices is not None:
            replay = _check_replay(cfg, expert_indices, batch, length)
        hidden, lm_head, stats = model.apply(variables, tokens_BxL, rope, weights_mask, mask_BxL,
                                             replay)
        return ForwardOutput(hidden, lm_head, None, _unflatten_stats(stats, batch, length))

    if segment_ids_BxL is not None:
        raise ValueError("segment_ids_BxL (packing) is for training forwards, not cached decoding")
    if cache.batch_size != batch:
        raise ValueError(f"cache holds {cache.batch_size} sequences but tokens have {batch}")
    if positions_BxL is None:
        rope = rope_tables(cfg, positions_from_mask(mask_BxL, cache.valid_BxS.sum(axis=1)),
                           max_position=cache.max_length)
    else:
        rope = rope_tables(cfg, positions_BxL)
    valid_BxS = jax.lax.dynamic_update_slice(cache.valid_BxS, mask_BxL, (0, cache.index))
    query_slots_BxL = cache.index + jnp.broadcast_to(jnp.arange(length), (batch, length))
    weights_mask = attention_weights_mask(query_slots_BxL, valid_BxS)

    # Layers unrolled: each applies the same Block to its slice of the parameters and its own
    # cache arrays, which are updated in place.
    layers = unstack_layers(params)["layers"]
    replay = None if expert_indices is None else _check_replay(cfg, expert_indices, batch, length)
    x_BxLxD = embed(cfg, params["embedding"], tokens_BxL, sharding)
    keys, values, stats, moe_index = [], [], [], 0
    axes = cache_axes(cfg)
    # (keys, values), or for MLA (latents, rope keys): each layer's pair goes through its Block.
    for layer_params, is_moe, k, v in zip(layers, layer_is_moe(cfg), *cache.layer_arrays):
        layer_replay = None
        if is_moe and replay is not None:
            layer_replay = replay[moe_index]
        x_BxLxD, (k, v), layer_stats = Block(cfg, sharding, is_moe).apply(
            {"params": layer_params}, x_BxLxD, rope, weights_mask, cache.index, (k, v),
            mask_BxL, layer_replay)
        keys.append(constrain(k, axes, sharding))
        values.append(constrain(v, axes, sharding))
        if is_moe:
            stats.append(layer_stats)
            moe_index += 1
    hidden_BxLxD = rms_norm(x_BxLxD, params["final_norm"]["scale"], cfg.rms_norm_eps)
    new_cache = cache.with_layers(keys, values, valid_BxS, cache.index + length)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *stats) if stats else None
    return ForwardOutput(hidden_BxLxD, lm_head_of(cfg, params), new_cache,
                         _unflatten_stats(stacked, batch, length))


def _check_replay(cfg: ModelConfig, expert_indices, batch: int, length: int):
    expected = (cfg.num_moe_layers, batch, length, cfg.num_experts_per_tok)
    if not cfg.is_moe:
        raise ValueError("expert_indices (router replay) given to a dense decoder")
    if tuple(expert_indices.shape) != expected:
        raise ValueError(f"expert_indices has shape {tuple(expert_indices.shape)}; expected "
                         f"[MoE layers, B, L, experts per token] = {list(expected)}")
    return expert_indices


def _unflatten_stats(stats: MoEStats | None, batch: int, length: int) -> MoEStats | None:
    """Stacked stats with the expert choice reshaped from ``[Y, N, A]`` to ``[Y, B, L, A]``."""
    if stats is None:
        return None
    indices = stats.expert_indices
    return stats._replace(expert_indices=indices.reshape(indices.shape[0], batch, length, -1))


def logits(cfg: ModelConfig, params: Params, tokens_BxL, attention_mask_BxL=None, **kwargs):
    """Float32 logits ``[B, L, V]`` (a convenience for tests and evaluation; training and rollout
    use the hidden states and LM head directly)."""
    out = forward(cfg, params, tokens_BxL, attention_mask_BxL=attention_mask_BxL, **kwargs)
    return jnp.einsum("bld,dv->blv", out.hidden_BxLxD, out.lm_head_DxV,
                      preferred_element_type=jnp.float32)


def _init_boxed(cfg: ModelConfig, rng: jax.Array):
    tokens = jnp.zeros((1, 1), jnp.int32)
    mask = jnp.ones((1, 1, 1), bool)
    rope = rope_tables(cfg, jnp.zeros((1, 1), jnp.int32))
    return Decoder(cfg).init(rng, tokens, rope, mask, jnp.ones((1, 1), bool))["params"]


def init(cfg: ModelConfig, rng: jax.Array) -> Params:
    """Randomly initialized parameters (plain arrays, unsharded)."""
    return nn.meta.unbox(_init_boxed(cfg, rng))


def param_logical_axes(cfg: ModelConfig) -> Params:
    """A tree like the params holding each parameter's logical ``PartitionSpec``."""
    return logical_axes_of(jax.eval_shape(lambda: _init_boxed(cfg, jax.random.key(0))))


def param_shapes(cfg: ModelConfig) -> Params:
    """``ShapeDtypeStruct`` of every parameter, without allocating anything."""
    return jax.eval_shape(lambda: init(cfg, jax.random.key(0)))


def param_shardings(cfg: ModelConfig, sharding: Sharding) -> Params:
    """``NamedSharding`` of every parameter under ``sharding``'s mesh and rules."""
    return sharding.tree(param_logical_axes(cfg), param_shapes(cfg))


def init_sharded(cfg: ModelConfig, rng: jax.Array, sharding: Sharding) -> Params:
    """Parameters created directly in their sharded layout (never materialized whole)."""
    return jax.jit(lambda r: init(cfg, r), out_shardings=param_shardings(cfg, sharding))(rng)


def count_params(cfg: ModelConfig) -> int:
    """Number of parameters (tied embeddings counted once)."""
    return sum(x.size for x in jax.tree.leaves(param_shapes(cfg)))
