"""Model configuration: one frozen dataclass for the Llama 3.x / Qwen2 / Qwen2.5 / Qwen3 family
and the mixture-of-experts decoders (Qwen3-MoE; DeepSeek-V3 with Multi-head Latent Attention).

Presets carry the published dimensions; ``get_config(name, **overrides)`` returns one.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from r1jax.models.yarn import YarnScaling

MODEL_TYPES = ("llama", "qwen2", "qwen3", "qwen3_moe", "deepseek_v3")
SCORINGS = ("softmax", "sigmoid")
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

    Mixture of experts (``n_routed_experts > 0``): the first ``first_k_dense_replace`` layers keep
    the dense SwiGLU MLP (``intermediate_size``); every later layer routes each token to
    ``num_experts_per_tok`` of ``n_routed_experts`` SwiGLU experts of width
    ``moe_intermediate_size`` (``r1jax.models.moe``), plus ``n_shared_experts`` always-on experts
    (one dense SwiGLU of width ``n_shared_experts · moe_intermediate_size``). Scores are a softmax
    (Qwen3-MoE) or a sigmoid (DeepSeek-V3) of the router logits; with ``n_group > 1`` a token
    picks experts only within its ``topk_group`` best groups; ``score_correction_bias`` adds a
    per-expert bias (adjusted outside the gradient: DeepSeek-V3's aux-loss-free balancing) to
    the scores used for choosing experts, never to their weights; ``norm_topk_prob`` renormalizes the chosen scores to sum to 1 and
    ``routed_scaling_factor`` multiplies them.

    Multi-head Latent Attention (``model_type="deepseek_v3"``, ``r1jax.models.mla``): queries
    through a LoRA of rank ``q_lora_rank`` (None: one projection), keys and values from a shared
    latent of rank ``kv_lora_rank``; each head's query/key is ``qk_nope_head_dim`` no-rope plus
    ``qk_rope_head_dim`` rope dims, its value ``v_head_dim``. ``head_dim`` must equal
    ``qk_rope_head_dim`` (it sizes the RoPE tables) and ``num_kv_heads`` ``num_heads``;
    ``rope_scaling`` is then a ``yarn.YarnScaling`` (or None), ``rope_interleave`` says the rope
    columns hold interleaved pairs, ``attention_bias`` adds biases to q_a/kv_a/o projections.
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
    rope_scaling: RopeScaling | YarnScaling | None = None
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
    # Mixture of experts (0 routed experts: a dense decoder; the fields below are then unused).
    n_routed_experts: int = 0
    num_experts_per_tok: int = 1
    moe_intermediate_size: int = 0
    n_shared_experts: int = 0
    n_group: int = 1
    topk_group: int = 1
    scoring: str = "softmax"
    score_correction_bias: bool = False
    norm_topk_prob: bool = False
    routed_scaling_factor: float = 1.0
    first_k_dense_replace: int = 0
    # Multi-head Latent Attention (deepseek_v3 only; kv_lora_rank 0 elsewhere).
    q_lora_rank: int | None = None
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    rope_interleave: bool = True
    attention_bias: bool = False

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
            # Llama 3's scaling has low/high frequency factors; YaRN (deepseek_v3) has not.
            kind = RopeScaling if "low_freq_factor" in self.rope_scaling else YarnScaling
            object.__setattr__(self, "rope_scaling", kind(**self.rope_scaling))
        self._check_moe()
        self._check_mla()

    def _check_mla(self):
        if not self.is_mla:
            if self.kv_lora_rank or self.q_lora_rank is not None:
                raise ValueError(f"ModelConfig.kv_lora_rank/q_lora_rank are Multi-head Latent "
                                 f"Attention fields; model_type {self.model_type!r} has none "
                                 "(use model_type='deepseek_v3')")
            if isinstance(self.rope_scaling, YarnScaling):
                raise ValueError(f"ModelConfig.rope_scaling: YaRN is implemented for "
                                 f"deepseek_v3 only, not {self.model_type!r}")
            return
        for name in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1 for deepseek_v3, got "
                                 f"{getattr(self, name)}")
        if self.q_lora_rank is not None and int(self.q_lora_rank) < 1:
            raise ValueError(f"ModelConfig.q_lora_rank must be >= 1, or None for a plain q "
                             f"projection; got {self.q_lora_rank}")
        if self.head_dim != self.qk_rope_head_dim:
            raise ValueError(f"ModelConfig.head_dim ({self.head_dim}) must equal "
                             f"qk_rope_head_dim ({self.qk_rope_head_dim}) for deepseek_v3: it "
                             "sizes the RoPE tables of the rope part")
        if self.num_kv_heads != self.num_heads:
            raise ValueError(f"ModelConfig.num_kv_heads ({self.num_kv_heads}) must equal "
                             f"num_heads ({self.num_heads}) for deepseek_v3 (MLA has no KV groups)")
        if self.qkv_bias or self.qk_norm:
            raise ValueError("ModelConfig.qkv_bias/qk_norm do not exist in deepseek_v3; its "
                             "biases are attention_bias")
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, YarnScaling):
            raise ValueError(f"ModelConfig.rope_scaling of deepseek_v3 must be a YarnScaling or "
                             f"None, got {self.rope_scaling!r}")
        if not self.is_moe:
            raise ValueError("ModelConfig.model_type 'deepseek_v3' needs n_routed_experts >= 1")

    def _check_moe(self):
        if self.model_type == "qwen3_moe" and self.n_routed_experts < 1:
            raise ValueError("ModelConfig.model_type 'qwen3_moe' needs n_routed_experts >= 1")
        if self.n_routed_experts < 0:
            raise ValueError(f"ModelConfig.n_routed_experts must be >= 0, got "
                             f"{self.n_routed_experts}")
        if not self.is_moe:
            return
        experts, k = self.n_routed_experts, self.num_experts_per_tok
        if self.moe_intermediate_size < 1:
            raise ValueError(f"ModelConfig.moe_intermediate_size must be >= 1 with "
                             f"{experts} routed experts, got {self.moe_intermediate_size}")
        if not 1 <= k <= experts:
            raise ValueError(f"ModelConfig.num_experts_per_tok ({k}) must be in "
                             f"[1, n_routed_experts={experts}]")
        if self.n_shared_experts < 0:
            raise ValueError(f"ModelConfig.n_shared_experts must be >= 0, got "
                             f"{self.n_shared_experts}")
        if self.scoring not in SCORINGS:
            raise ValueError(f"ModelConfig.scoring {self.scoring!r} is not one of {SCORINGS}")
        if self.n_group < 1 or experts % self.n_group:
            raise ValueError(f"ModelConfig.n_group ({self.n_group}) must divide n_routed_experts "
                             f"({experts})")
        if not 1 <= self.topk_group <= self.n_group:
            raise ValueError(f"ModelConfig.topk_group ({self.topk_group}) must be in "
                             f"[1, n_group={self.n_group}]")
        per_group = experts // self.n_group
        if self.n_group > 1 and per_group < 2:
            raise ValueError(f"ModelConfig.n_group ({self.n_group}) leaves {per_group} expert per "
                             "group; groups are ranked by their top-2 scores, so each needs >= 2")
        if k > self.topk_group * per_group:
            raise ValueError(f"ModelConfig.num_experts_per_tok ({k}) exceeds the experts of the "
                             f"topk_group={self.topk_group} chosen groups "
                             f"({self.topk_group * per_group}); raise topk_group")
        if not self.routed_scaling_factor > 0:
            raise ValueError(f"ModelConfig.routed_scaling_factor must be > 0, got "
                             f"{self.routed_scaling_factor}")
        if not 0 <= self.first_k_dense_replace < self.num_layers:
            raise ValueError(f"ModelConfig.first_k_dense_replace ({self.first_k_dense_replace}) "
                             f"must be in [0, num_layers={self.num_layers}): at least one layer "
                             "must be a mixture of experts")

    @property
    def is_moe(self) -> bool:
        return self.n_routed_experts > 0

    @property
    def is_mla(self) -> bool:
        """Multi-head Latent Attention (and a latent cache) instead of grouped-query attention."""
        return self.model_type == "deepseek_v3"

    @property
    def num_dense_layers(self) -> int:
        """Layers with the dense MLP (all of them in a dense decoder; they come first)."""
        return self.first_k_dense_replace if self.is_moe else self.num_layers

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.num_dense_layers

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


# DeepSeek-V3's YaRN: 4k pretraining context stretched 40x (config.json's rope_scaling).
_DEEPSEEK_V3_YARN = YarnScaling(factor=40.0, original_max_position_embeddings=4096,
                                beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0)
_DEEPSEEK_V2_YARN = YarnScaling(factor=40.0, original_max_position_embeddings=4096,
                                beta_fast=32.0, beta_slow=1.0, mscale=0.707, mscale_all_dim=0.707)

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
    # Tiny CPU mixture of experts, Qwen3-MoE-shaped (8 experts, top-2; the first layer dense).
    "tiny-moe": ModelConfig(
        vocab_size=512, hidden_size=128, intermediate_size=384, num_layers=4, num_heads=4,
        num_kv_heads=2, head_dim=32, model_type="qwen3_moe", rope_theta=10_000.0,
        rms_norm_eps=1e-6, qk_norm=True, tie_embeddings=True, max_position_embeddings=512,
        scan_unroll=4, n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=96,
        norm_topk_prob=True, first_k_dense_replace=1,
    ),
    # Tiny CPU DeepSeek-V3: MLA with a q LoRA and YaRN, 8 experts top-2 in 4 groups (top 2
    # groups), sigmoid scores with the correction bias, a shared expert, the first layer dense.
    "tiny-deepseek": ModelConfig(
        vocab_size=512, hidden_size=128, intermediate_size=384, num_layers=4, num_heads=4,
        num_kv_heads=4, head_dim=16, model_type="deepseek_v3", rope_theta=10_000.0,
        rope_scaling=YarnScaling(factor=4.0, original_max_position_embeddings=128,
                                 mscale=1.0, mscale_all_dim=1.0),
        rms_norm_eps=1e-6, tie_embeddings=False, max_position_embeddings=512, scan_unroll=4,
        n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=64, n_shared_experts=1,
        n_group=4, topk_group=2, scoring="sigmoid", score_correction_bias=True,
        norm_topk_prob=True, routed_scaling_factor=2.5, first_k_dense_replace=1,
        q_lora_rank=64, kv_lora_rank=32, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
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
    # Qwen/Qwen3-30B-A3B config.json.
    "qwen3-30b-a3b": ModelConfig(
        vocab_size=151_936, hidden_size=2048, intermediate_size=6144, num_layers=48,
        num_heads=32, num_kv_heads=4, head_dim=128, model_type="qwen3_moe",
        rope_theta=1_000_000.0, rms_norm_eps=1e-6, qk_norm=True, tie_embeddings=False,
        max_position_embeddings=40_960, bos_token_id=151_643, eos_token_id=151_645,
        n_routed_experts=128, num_experts_per_tok=8, moe_intermediate_size=768,
        norm_topk_prob=True,
    ),
    # deepseek-ai/DeepSeek-V3 config.json (671B; its multi-token-prediction layer not included).
    "deepseek-v3": ModelConfig(
        vocab_size=129_280, hidden_size=7168, intermediate_size=18_432, num_layers=61,
        num_heads=128, num_kv_heads=128, head_dim=64, model_type="deepseek_v3",
        rope_theta=10_000.0, rope_scaling=_DEEPSEEK_V3_YARN, rms_norm_eps=1e-6,
        tie_embeddings=False, max_position_embeddings=163_840, bos_token_id=0, eos_token_id=1,
        n_routed_experts=256, num_experts_per_tok=8, moe_intermediate_size=2048,
        n_shared_experts=1, n_group=8, topk_group=4, scoring="sigmoid",
        score_correction_bias=True, norm_topk_prob=True, routed_scaling_factor=2.5,
        first_k_dense_replace=3, q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128,
        qk_rope_head_dim=64, v_head_dim=128,
    ),
    # DeepSeek-V2-Lite's shape (deepseek-ai/DeepSeek-V2-Lite config.json, 15.7B) in the
    # deepseek_v3 architecture: softmax scores, no groups and no score bias, as V2 routes, so
    # the preset's checkpoints are not transformers' DeepseekV3 (whose router is sigmoid-only).
    "deepseek-v2-lite": ModelConfig(
        vocab_size=102_400, hidden_size=2048, intermediate_size=10_944, num_layers=27,
        num_heads=16, num_kv_heads=16, head_dim=64, model_type="deepseek_v3",
        rope_theta=10_000.0, rope_scaling=_DEEPSEEK_V2_YARN, rms_norm_eps=1e-6,
        tie_embeddings=False, max_position_embeddings=163_840, bos_token_id=100_000,
        eos_token_id=100_001, n_routed_experts=64, num_experts_per_tok=6,
        moe_intermediate_size=1408, n_shared_experts=2, scoring="softmax",
        norm_topk_prob=False, routed_scaling_factor=1.0, first_k_dense_replace=1,
        q_lora_rank=None, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
        v_head_dim=128,
    ),
}


def get_config(name: str, **overrides) -> ModelConfig:
    """A preset by name (see ``PRESETS``), with optional field overrides (e.g. ``dtype``)."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known presets: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
