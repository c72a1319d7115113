"""One functional decoder family: Llama 3.x, Qwen2 / Qwen2.5 and Qwen3.

``forward`` is the full-sequence (training) and cached forward; ``decode.decode_step`` is the
same decoder's one-token CPU decode step, built from the same ``layers`` functions.

Array names carry their shape; the letters are ``r1jax``'s one legend (``r1jax/__init__.py``).
"""
from r1jax.models import decode
from r1jax.models.config import PRESETS, ModelConfig, RopeScaling, get_config
from r1jax.models.decoder import (
    CACHE_AXES,
    Decoder,
    ForwardOutput,
    KVCache,
    LatentCache,
    cache_axes,
    count_params,
    forward,
    init,
    init_cache,
    init_sharded,
    logits,
    param_logical_axes,
    param_shapes,
    param_shardings,
    positions_from_mask,
    unstack_layers,
)

__all__ = [
    "CACHE_AXES", "PRESETS", "Decoder", "ForwardOutput", "KVCache", "LatentCache", "ModelConfig",
    "RopeScaling", "cache_axes", "count_params", "decode", "forward", "get_config", "init",
    "init_cache", "init_sharded", "logits", "param_logical_axes", "param_shapes",
    "param_shardings", "positions_from_mask", "unstack_layers",
]
