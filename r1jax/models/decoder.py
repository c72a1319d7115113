"""The decoder (Llama 3.x / Qwen2 / Qwen2.5 / Qwen3) and its functional API.

Layers are stacked with ``nn.scan`` so a 80-layer model compiles as fast as a 2-layer one; every
parameter carries logical axis names (with a leading ``layers`` axis inside the stack). The forward
returns the final hidden states and the LM head separately, so that token log-probs can be computed
blockwise (``kernels.token_logprobs``) without materializing ``[tokens × vocab]`` logits.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax.models.config import ModelConfig
from r1jax.models.layers import (MLP, Attention, RMSNorm, attention_weights_mask, embed, param,
                                 rms_norm, rope_tables)
from r1jax.sharding import Sharding, constrain, logical_axes_of

Params = Any

_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    cfg: ModelConfig
    sharding: Sharding | None = None

    @nn.compact
    def __call__(self, x_BxLxD, rope, mask_BxLxS, cache_index=None, kv_cache=None):
        """``rope``: ``layers.rope_tables`` of the tokens' positions."""
        cfg = self.cfg
        norm = lambda name: RMSNorm(cfg.rms_norm_eps, "embed", cfg.weight_dtype, name=name)  # noqa: E731
        attn_out, kv_cache = Attention(cfg, self.sharding, name="attn")(
            norm("attn_norm")(x_BxLxD), rope, mask_BxLxS, kv_cache, cache_index
        )
        x_BxLxD = x_BxLxD + attn_out
        x_BxLxD = x_BxLxD + MLP(cfg, self.sharding, name="mlp")(norm("mlp_norm")(x_BxLxD))
        return constrain(x_BxLxD, ("batch", "length", "act_embed"), self.sharding), kv_cache


class _ScanBlock(Block):
    """``Block`` in the ``(carry, *broadcast) -> (carry, None)`` form ``nn.scan`` expects."""

    def __call__(self, x_BxLxD, rope, mask_BxLxS):
        return super().__call__(x_BxLxD, rope, mask_BxLxS)[0], None


class Decoder(nn.Module):
    """Token embedding → ``num_layers`` blocks (one ``nn.scan``) → final RMSNorm.

    Returns ``(hidden_BxLxD, lm_head_DxV)``. This is the training/full-sequence forward and the
    definition of the parameter tree; cached decoding runs the same ``Block`` per layer in
    ``forward`` instead (and the CPU rollout the one-token ``r1jax.models.decode`` step).
    """

    cfg: ModelConfig
    sharding: Sharding | None = None

    @nn.compact
    def __call__(self, tokens_BxL, rope, mask_BxLxS):
        """``rope``: ``layers.rope_tables`` of the tokens' positions."""
        cfg = self.cfg
        init = nn.initializers.normal(stddev=0.02)
        embedding_VxD = param(self, "embedding", init, (cfg.vocab_size, cfg.hidden_size),
                              ("vocab", "embed"), cfg.weight_dtype)
        x_BxLxD = embed(cfg, embedding_VxD, tokens_BxL, self.sharding)
        block = _ScanBlock
        if cfg.remat != "none":
            block = nn.remat(_ScanBlock, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=False)
        layers = nn.scan(
            block,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(nn.broadcast, nn.broadcast),
            length=cfg.num_layers,
            unroll=min(cfg.scan_unroll, cfg.num_layers),
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
        x_BxLxD, _ = layers(cfg, self.sharding, name="layers")(x_BxLxD, rope, mask_BxLxS)
        hidden_BxLxD = RMSNorm(cfg.rms_norm_eps, "embed", cfg.weight_dtype, name="final_norm")(
            x_BxLxD)
        if cfg.tie_embeddings:
            return hidden_BxLxD, embedding_VxD.T
        lm_head_DxV = param(self, "lm_head", init, (cfg.hidden_size, cfg.vocab_size),
                            ("embed", "vocab"), cfg.weight_dtype)
        return hidden_BxLxD, lm_head_DxV


def lm_head_of(cfg: ModelConfig, params: Params):
    """The LM head ``[D, V]`` of ``params`` (the embedding's transpose when they are tied)."""
    return params["embedding"].T if cfg.tie_embeddings else params["lm_head"]


def unstack_layers(params: Params) -> Params:
    """Params with the stacked ``layers`` split into a tuple of per-layer trees.

    Cached decoding accepts either form; splitting once before a decode loop avoids slicing every
    layer's weights out of the stack at every step (a copy per layer per token on CPU).
    """
    if isinstance(params["layers"], (tuple, list)):
        return params
    num_layers = jax.tree.leaves(params["layers"])[0].shape[0]
    layers = tuple(jax.tree.map(lambda x, i=i: x[i], params["layers"]) for i in range(num_layers))
    return {**params, "layers": layers}


@flax.struct.dataclass
class KVCache:
    """Per-layer keys and values (tuples of ``num_layers`` arrays ``[B, K, S, E]``), which slots
    hold real tokens (``valid_BxS``), and the next slot to write (``index``)."""

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    valid_BxS: jax.Array
    index: jax.Array

    @property
    def max_length(self) -> int:
        return self.valid_BxS.shape[1]

    @property
    def batch_size(self) -> int:
        return self.valid_BxS.shape[0]

    def map_layers(self, fn) -> "KVCache":
        """Apply ``fn`` to every per-layer key and value array."""
        return self.replace(keys=tuple(map(fn, self.keys)), values=tuple(map(fn, self.values)))


CACHE_AXES = ("batch", "act_kv_heads", "cache_length", None)


def init_cache(cfg: ModelConfig, batch_size: int, max_length: int, dtype=None) -> KVCache:
    """An empty cache of ``max_length`` slots (``dtype`` defaults to the activation dtype)."""
    shape = (batch_size, cfg.num_kv_heads, max_length, cfg.head_dim)
    dtype = cfg.activation_dtype if dtype is None else dtype
    return KVCache(
        keys=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)),
        values=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)),
        valid_BxS=jnp.zeros((batch_size, max_length), bool),
        index=jnp.zeros((), jnp.int32),
    )


class ForwardOutput(NamedTuple):
    hidden_BxLxD: jax.Array
    lm_head_DxV: jax.Array
    cache: KVCache | None


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
    cache: KVCache | None = None,
    sharding: Sharding | None = None,
) -> ForwardOutput:
    """Run the decoder on ``tokens_BxL``.

    ``attention_mask_BxL`` marks real tokens (left padding is 0). Positions default to the count of
    real tokens before each one, continuing from the cache when one is given. ``segment_ids_BxL``
    confines attention to tokens of the same packed example (positions must then be given).
    With ``cache``, the new tokens are written at ``cache.index`` and attend to every valid slot
    before them; the updated cache is returned.
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
        hidden, lm_head = model.apply(variables, tokens_BxL, rope, weights_mask)
        return ForwardOutput(hidden, lm_head, None)

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
    block = Block(cfg, sharding)
    x_BxLxD = embed(cfg, params["embedding"], tokens_BxL, sharding)
    keys, values = [], []
    for layer_params, k, v in zip(layers, cache.keys, cache.values):
        x_BxLxD, (k, v) = block.apply({"params": layer_params}, x_BxLxD, rope,
                                      weights_mask, cache.index, (k, v))
        keys.append(constrain(k, CACHE_AXES, sharding))
        values.append(constrain(v, CACHE_AXES, sharding))
    hidden_BxLxD = rms_norm(x_BxLxD, params["final_norm"]["scale"], cfg.rms_norm_eps)
    new_cache = KVCache(tuple(keys), tuple(values), valid_BxS, cache.index + length)
    return ForwardOutput(hidden_BxLxD, lm_head_of(cfg, params), new_cache)


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
    return Decoder(cfg).init(rng, tokens, rope, mask)["params"]


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
