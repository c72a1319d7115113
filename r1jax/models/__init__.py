"""One functional decoder family: Llama 3.x, Qwen2 / Qwen2.5 and Qwen3.

Shape legend for array names: B batch · L new tokens · S key/cache slots · D model width ·
H query heads · K KV heads · G query heads per KV head · E head dim · F MLP width · V vocabulary ·
Y layers · N flattened tokens.
"""
from r1jax.models.config import PRESETS, ModelConfig, RopeScaling, get_config
from r1jax.models.decoder import (
    CACHE_AXES,
    Decoder,
    ForwardOutput,
    KVCache,
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
    "CACHE_AXES", "Decoder", "ForwardOutput", "KVCache", "ModelConfig", "PRESETS", "RopeScaling",
    "count_params", "forward", "get_config", "init", "init_cache", "init_sharded", "logits",
    "param_logical_axes", "param_shapes", "param_shardings", "positions_from_mask",
    "unstack_layers",
]
