"""The caches of cached decoding: full keys and values, or MLA's latents and rope keys.

``KVCache`` holds per-layer keys and values ``[B, K, S, E]`` (grouped-query attention).
``LatentCache`` holds what Multi-head Latent Attention needs per token (``r1jax.models.mla``):
the normalized latent ``[B, S, R]`` and the one rotated rope key ``[B, S, Er]`` — DeepSeek-V3:
576 values per token per layer instead of 40,960. Both mark which slots hold real tokens
(``valid_BxS``) and the next slot to write (``index``), and both have ``map_layers``, so code that
repeats or reshards a cache (the rollout engines) handles either.
"""
from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

from r1jax.models.config import ModelConfig

CACHE_AXES = ("batch", "act_kv_heads", "cache_length", None)
# The latent cache: no head axis to split (every head reads the same latent).
LATENT_CACHE_AXES = ("batch", "cache_length", None)


class _Slots:
    """What both caches know of their slots: ``valid_BxS [B, S]`` marks the real tokens."""

    valid_BxS: jax.Array

    @property
    def max_length(self) -> int:
        return self.valid_BxS.shape[1]

    @property
    def batch_size(self) -> int:
        return self.valid_BxS.shape[0]


@flax.struct.dataclass
class KVCache(_Slots):
    """Per-layer keys and values (tuples of ``num_layers`` arrays ``[B, K, S, E]``), which slots
    hold real tokens (``valid_BxS``), and the next slot to write (``index``)."""

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    valid_BxS: jax.Array
    index: jax.Array

    @property
    def layer_arrays(self) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
        """The two per-layer tuples: ``(keys, values)``."""
        return self.keys, self.values

    def with_layers(self, first, second, valid_BxS, index) -> KVCache:
        return KVCache(tuple(first), tuple(second), valid_BxS, index)

    def map_layers(self, fn) -> KVCache:
        """Apply ``fn`` to every per-layer key and value array."""
        return self.replace(keys=tuple(map(fn, self.keys)), values=tuple(map(fn, self.values)))


@flax.struct.dataclass
class LatentCache(_Slots):
    """Per-layer MLA latents (``[B, S, R]``, after ``kv_a_layernorm``) and rotated rope keys
    (``[B, S, Er]``), ``valid_BxS`` and ``index`` as in ``KVCache``."""

    latents: tuple[jax.Array, ...]
    rope_keys: tuple[jax.Array, ...]
    valid_BxS: jax.Array
    index: jax.Array

    @property
    def layer_arrays(self) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
        """The two per-layer tuples: ``(latents, rope_keys)``."""
        return self.latents, self.rope_keys

    def with_layers(self, first, second, valid_BxS, index) -> LatentCache:
        return LatentCache(tuple(first), tuple(second), valid_BxS, index)

    def map_layers(self, fn) -> LatentCache:
        """Apply ``fn`` to every per-layer latent and rope-key array."""
        return self.replace(latents=tuple(map(fn, self.latents)),
                            rope_keys=tuple(map(fn, self.rope_keys)))


def cache_axes(cfg: ModelConfig) -> tuple:
    """The logical axes of ``cfg``'s per-layer cache arrays (``CACHE_AXES`` or
    ``LATENT_CACHE_AXES``)."""
    return LATENT_CACHE_AXES if cfg.is_mla else CACHE_AXES


def init_cache(cfg: ModelConfig, batch_size: int, max_length: int, dtype=None
               ) -> KVCache | LatentCache:
    """An empty cache of ``max_length`` slots (``dtype`` defaults to the activation dtype): a
    ``LatentCache`` for MLA models, else a ``KVCache``."""
    dtype = cfg.activation_dtype if dtype is None else dtype
    valid = jnp.zeros((batch_size, max_length), bool)
    index = jnp.zeros((), jnp.int32)
    if cfg.is_mla:
        widths = (cfg.kv_lora_rank, cfg.qk_rope_head_dim)
        first, second = ([jnp.zeros((batch_size, max_length, w), dtype)
                          for _ in range(cfg.num_layers)] for w in widths)
        return LatentCache(tuple(first), tuple(second), valid, index)
    shape = (batch_size, cfg.num_kv_heads, max_length, cfg.head_dim)
    return KVCache(
        keys=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)),
        values=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)),
        valid_BxS=valid,
        index=index,
    )
