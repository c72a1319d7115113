"""Model configuration: one frozen dataclass for the Llama 3.x / Qwen2 / Qwen2.5 / Qwen3 family.

Presets carry the published dimensions; ``get_config(name, **overrides)`` returns one.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

MODEL_TYPES = ("llama", "qwen2", "qwen3")
DTYPES = ("float32", "bfloat16", "float16")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama 3 frequency-dependent RoPE scaling (``rope_type: llama3`` in ``config.json``)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int

    def __post_init__(self):
        if self.factor <= 0 or self.low_freq_factor <= 0:
            raise ValueError(f"rope_scaling factors must be positive, got {self}")
        if self.high_freq_factor <= self.low_freq_factor:
            raise ValueError(
                f"rope_scaling.high_freq_factor ({self.high_freq_factor}) must exceed "
                f"low_freq_factor ({self.low_freq_factor})"
            )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and numerics of a decoder.

    ``dtype`` is the activation/compute dtype and ``param_dtype`` the storage dtype; norms, RoPE,
    attention softmax and logits are always computed in float32.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    model_type: str = "llama"
    rope_theta: float = 10_000.0
    rope_scaling: RopeScaling | None = None
    rms_norm_eps: float = 1e-6
    qkv_bias: bool = False
    qk_norm: bool = False
    tie_embeddings: bool = False
    max_position_embeddings: int = 4096
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"
    scan_unroll: int = 1

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim", "max_position_embeddings", "scan_unroll"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"ModelConfig.num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads}) for grouped-query attention"
            )
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig.head_dim must be even for RoPE, got {self.head_dim}")
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"ModelConfig.model_type {self.model_type!r} is not one of {MODEL_TYPES}")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"ModelConfig.{name} {getattr(self, name)!r} is not one of {DTYPES}")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"ModelConfig.remat {self.remat!r} is not one of {REMAT_POLICIES}")
        if isinstance(self.rope_scaling, dict):
            object.__setattr__(self, "rope_scaling", RopeScaling(**self.rope_scaling))

    @property
    def activation_dtype(self) -> Any:
        return jnp.dtype(self.dtype)

    @property
    def weight_dtype(self) -> Any:
        return jnp.dtype(self.param_dtype)

    @property
    def group_size(self) -> int:
        """Query heads per KV head."""
        return self.num_heads // self.num_kv_heads

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


_LLAMA3_ROPE = RopeScaling(
    factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
)

PRESETS: dict[str, ModelConfig] = {
    # Tiny CPU model: integer-level vocabulary, a few hundred thousand parameters.
    "tiny": ModelConfig(
        vocab_size=512, hidden_size=128, intermediate_size=384, num_layers=4, num_heads=4,
        num_kv_heads=2, head_dim=32, model_type="qwen2", rope_theta=10_000.0, rms_norm_eps=1e-6,
        qkv_bias=True, tie_embeddings=True, max_position_embeddings=512, scan_unroll=4,
    ),
    "qwen2.5-0.5b": ModelConfig(
        vocab_size=151_936, hidden_size=896, intermediate_size=4864, num_layers=24, num_heads=14,
        num_kv_heads=2, head_dim=64, model_type="qwen2", rope_theta=1_000_000.0, rms_norm_eps=1e-6,
        qkv_bias=True, tie_embeddings=True, max_position_embeddings=32_768,
        bos_token_id=151_643, eos_token_id=151_643,
    ),
    "qwen2.5-1.5b": ModelConfig(
        vocab_size=151_936, hidden_size=1536, intermediate_size=8960, num_layers=28, num_heads=12,
        num_kv_heads=2, head_dim=128, model_type="qwen2", rope_theta=1_000_000.0,
        rms_norm_eps=1e-6, qkv_bias=True, tie_embeddings=True, max_position_embeddings=131_072,
        bos_token_id=151_643, eos_token_id=151_643,
    ),
    "qwen2.5-7b": ModelConfig(
        vocab_size=152_064, hidden_size=3584, intermediate_size=18_944, num_layers=28,
        num_heads=28, num_kv_heads=4, head_dim=128, model_type="qwen2", rope_theta=1_000_000.0,
        rms_norm_eps=1e-6, qkv_bias=True, tie_embeddings=False, max_position_embeddings=131_072,
        bos_token_id=151_643, eos_token_id=151_643,
    ),
    "qwen2.5-32b": ModelConfig(
        vocab_size=152_064, hidden_size=5120, intermediate_size=27_648, num_layers=64,
        num_heads=40, num_kv_heads=8, head_dim=128, model_type="qwen2", rope_theta=1_000_000.0,
        rms_norm_eps=1e-5, qkv_bias=True, tie_embeddings=False, max_position_embeddings=131_072,
        bos_token_id=151_643, eos_token_id=151_643,
    ),
    "qwen2.5-math-1.5b": ModelConfig(
        vocab_size=151_936, hidden_size=1536, intermediate_size=8960, num_layers=28, num_heads=12,
        num_kv_heads=2, head_dim=128, model_type="qwen2", rope_theta=10_000.0, rms_norm_eps=1e-6,
        qkv_bias=True, tie_embeddings=True, max_position_embeddings=4096,
        bos_token_id=151_643, eos_token_id=151_643,
    ),
    "qwen2.5-math-7b": ModelConfig(
        vocab_size=152_064, hidden_size=3584, intermediate_size=18_944, num_layers=28,
        num_heads=28, num_kv_heads=4, head_dim=128, model_type="qwen2", rope_theta=10_000.0,
        rms_norm_eps=1e-6, qkv_bias=True, tie_embeddings=False, max_position_embeddings=4096,
        bos_token_id=151_643, eos_token_id=151_643,
    ),
    "llama3.1-8b": ModelConfig(
        vocab_size=128_256, hidden_size=4096, intermediate_size=14_336, num_layers=32,
        num_heads=32, num_kv_heads=8, head_dim=128, model_type="llama", rope_theta=500_000.0,
        rope_scaling=_LLAMA3_ROPE, rms_norm_eps=1e-5, tie_embeddings=False,
        max_position_embeddings=131_072, bos_token_id=128_000, eos_token_id=128_001,
    ),
    "llama3.3-70b": ModelConfig(
        vocab_size=128_256, hidden_size=8192, intermediate_size=28_672, num_layers=80,
        num_heads=64, num_kv_heads=8, head_dim=128, model_type="llama", rope_theta=500_000.0,
        rope_scaling=_LLAMA3_ROPE, rms_norm_eps=1e-5, tie_embeddings=False,
        max_position_embeddings=131_072, bos_token_id=128_000, eos_token_id=128_009,
    ),
}


def get_config(name: str, **overrides) -> ModelConfig:
    """A preset by name (see ``PRESETS``), with optional field overrides (e.g. ``dtype``)."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known presets: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
