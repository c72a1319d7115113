"""``config.json`` ↔ ``ModelConfig`` for the Llama, Qwen2, Qwen3, Qwen3-MoE and DeepSeek-V3 model
types (the DeepSeek-V3 fields: ``config_deepseek``).

Reads both the transformers 4 layout (top-level ``rope_theta`` / ``rope_scaling``) and the
transformers 5 layout (``rope_parameters``). Anything the decoder does not implement — another rope
type, sliding windows, biases on the output projection or MLP — is an error, never ignored.
"""
from __future__ import annotations

import json
import os
from typing import Any

from r1jax.hf.config_deepseek import deepseek_v3_fields, deepseek_v3_to_dict, yarn_from
from r1jax.hf.errors import CheckpointError
from r1jax.models.config import DTYPES, MODEL_TYPES, ModelConfig, RopeScaling

_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                  "qwen3": "Qwen3ForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM",
                  "deepseek_v3": "DeepseekV3ForCausalLM"}
_TORCH_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def _require(raw: dict, key: str, path: str):
    if key not in raw:
        raise CheckpointError(f"{path}: missing key {key!r} (required to build the model)")
    return raw[key]


def _rope(raw: dict, path: str):
    params = raw.get("rope_parameters") or {}
    scaling = raw.get("rope_scaling") or params
    theta = raw.get("rope_theta", params.get("rope_theta", 10_000.0))
    rope_type = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if rope_type == "default":
        return float(theta), None
    if rope_type == "yarn" and raw.get("model_type") == "deepseek_v3":
        return float(theta), yarn_from(scaling, path)
    if rope_type != "llama3":
        raise CheckpointError(
            f"{path}: rope type {rope_type!r} under 'rope_scaling'/'rope_parameters' is not "
            "supported; expected 'default' or 'llama3'"
        )
    try:
        return float(theta), RopeScaling(
            factor=float(scaling["factor"]),
            low_freq_factor=float(scaling["low_freq_factor"]),
            high_freq_factor=float(scaling["high_freq_factor"]),
            original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
        )
    except KeyError as e:
        raise CheckpointError(f"{path}: llama3 rope scaling lacks key {e.args[0]!r}") from None


def _first_id(value) -> int | None:
    if isinstance(value, list):
        return int(value[0]) if value else None
    return None if value is None else int(value)


def _qwen3_moe_fields(raw: dict, num_layers: int, path: str) -> dict[str, Any]:
    """The MoE fields of a ``qwen3_moe`` config.json.

    Qwen3-MoE places dense layers by ``mlp_only_layers`` and ``decoder_sparse_step`` (layer ``l``
    is MoE iff ``l`` is not listed and ``(l + 1) % step == 0``); the decoder's two stacks hold
    dense layers first, so the dense layers must be a prefix ``0 … k-1``.
    """
    experts = raw.get("num_experts", raw.get("num_local_experts"))
    if experts is None:
        raise CheckpointError(f"{path}: missing key 'num_experts' (required for qwen3_moe)")
    step = int(raw.get("decoder_sparse_step", 1))
    only = {int(i) for i in raw.get("mlp_only_layers") or ()}
    if step < 1:
        raise CheckpointError(f"{path}: key 'decoder_sparse_step' is {step}; expected >= 1")
    dense = [i for i in range(num_layers) if i in only or (i + 1) % step]
    if dense != list(range(len(dense))) or len(dense) == num_layers:
        raise CheckpointError(
            f"{path}: keys 'mlp_only_layers'/'decoder_sparse_step' make layers {dense} dense; "
            "r1jax supports dense layers only as a prefix 0 … k-1 with at least one MoE layer "
            "after them")
    return {
        "n_routed_experts": int(experts),
        "num_experts_per_tok": int(_require(raw, "num_experts_per_tok", path)),
        "moe_intermediate_size": int(_require(raw, "moe_intermediate_size", path)),
        "norm_topk_prob": bool(raw.get("norm_topk_prob", False)),
        "first_k_dense_replace": len(dense),
    }


def config_from_dict(raw: dict[str, Any], path: str = "config.json", dtype: str | None = None
                     ) -> ModelConfig:
    """Build a ``ModelConfig`` from a parsed ``config.json`` (``path`` only names it in errors)."""
    model_type = raw.get("model_type")
    if model_type not in MODEL_TYPES:
        raise CheckpointError(
            f"{path}: key 'model_type' is {model_type!r}; expected one of {list(MODEL_TYPES)}"
        )
    if raw.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{path}: key 'hidden_act' is {raw['hidden_act']!r}; expected 'silu'")
    if raw.get("mlp_bias"):
        raise CheckpointError(f"{path}: key 'mlp_bias' is true; MLP biases are not supported")
    if raw.get("use_sliding_window"):
        raise CheckpointError(f"{path}: key 'use_sliding_window' is true; sliding-window "
                              "attention is not supported (set it false to use full attention)")
    attention_bias = bool(raw.get("attention_bias", False))
    if model_type in ("llama", "qwen3", "qwen3_moe") and attention_bias:
        raise CheckpointError(f"{path}: key 'attention_bias' is true for {model_type}; biases on "
                              "the attention output projection are not supported")
    num_heads = int(_require(raw, "num_attention_heads", path))
    hidden_size = int(_require(raw, "hidden_size", path))
    theta, scaling = _rope(raw, path)
    stored_dtype = raw.get("dtype") or raw.get("torch_dtype") or "float32"
    dtype = dtype or stored_dtype
    if dtype not in DTYPES:
        raise CheckpointError(f"{path}: dtype {dtype!r} is not one of {list(DTYPES)}")
    num_layers = int(_require(raw, "num_hidden_layers", path))
    moe = _qwen3_moe_fields(raw, num_layers, path) if model_type == "qwen3_moe" else {}
    if model_type == "deepseek_v3":
        moe = deepseek_v3_fields(raw, num_heads, path)
    # deepseek_v3 sets its own: head_dim is its rope part's, one KV head per query head.
    num_kv_heads = moe.pop("num_kv_heads", int(raw.get("num_key_value_heads") or num_heads))
    head_dim = moe.pop("head_dim", int(raw.get("head_dim") or hidden_size // num_heads))
    return ModelConfig(
        vocab_size=int(_require(raw, "vocab_size", path)),
        hidden_size=hidden_size,
        intermediate_size=int(_require(raw, "intermediate_size", path)),
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        model_type=model_type,
        rope_theta=theta,
        rope_scaling=scaling,
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
        qkv_bias=model_type == "qwen2",
        qk_norm=model_type in ("qwen3", "qwen3_moe"),
        tie_embeddings=bool(raw.get("tie_word_embeddings", False)),
        max_position_embeddings=int(raw.get("max_position_embeddings", 4096)),
        bos_token_id=_first_id(raw.get("bos_token_id")),
        eos_token_id=_first_id(raw.get("eos_token_id")),
        dtype=dtype,
        param_dtype=dtype,
        **moe,
    )


def load_config(checkpoint_dir: str, dtype: str | None = None) -> ModelConfig:
    path = os.path.join(checkpoint_dir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no config.json in checkpoint directory {checkpoint_dir!r}")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    return config_from_dict(raw, path, dtype)


def config_to_dict(cfg: ModelConfig) -> dict[str, Any]:
    """A ``config.json`` that transformers 4.x and 5.x both load."""
    if cfg.model_type == "qwen2" and not cfg.qkv_bias:
        raise ValueError("a qwen2 checkpoint always has q/k/v biases; set qkv_bias=True")
    if cfg.model_type != "qwen2" and cfg.qkv_bias:
        raise ValueError(f"{cfg.model_type} checkpoints cannot hold q/k/v biases")
    if cfg.qk_norm != (cfg.model_type in ("qwen3", "qwen3_moe")):
        raise ValueError("q/k RMSNorm exists exactly in qwen3 and qwen3_moe checkpoints")
    if cfg.is_moe != (cfg.model_type in ("qwen3_moe", "deepseek_v3")):
        raise ValueError(f"a {cfg.model_type} checkpoint cannot hold a mixture of experts; "
                         "qwen3_moe and deepseek_v3 are the MoE model types")
    if cfg.model_type == "qwen3_moe":
        _check_qwen3_moe(cfg)
    raw: dict[str, Any] = {
        "architectures": [_ARCHITECTURES[cfg.model_type]],
        "model_type": cfg.model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "tie_word_embeddings": cfg.tie_embeddings,
        "max_position_embeddings": cfg.max_position_embeddings,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "torch_dtype": _TORCH_DTYPES[cfg.param_dtype],
        "use_cache": True,
    }
    if cfg.model_type == "deepseek_v3":
        raw.pop("head_dim")  # transformers sets it to qk_rope_head_dim
        raw.update(deepseek_v3_to_dict(cfg))
        return raw
    if cfg.model_type != "qwen2":
        raw["attention_bias"] = False
        raw["mlp_bias"] = False
    else:
        raw["use_sliding_window"] = False
    if cfg.is_moe:
        raw.update(
            num_experts=cfg.n_routed_experts, num_experts_per_tok=cfg.num_experts_per_tok,
            moe_intermediate_size=cfg.moe_intermediate_size, norm_topk_prob=cfg.norm_topk_prob,
            decoder_sparse_step=1, mlp_only_layers=list(range(cfg.first_k_dense_replace)),
            use_sliding_window=False,
        )
    if cfg.rope_scaling is not None:
        s = cfg.rope_scaling
        raw["rope_scaling"] = {
            "rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
        }
    return raw


def _check_qwen3_moe(cfg: ModelConfig) -> None:
    """What a qwen3_moe config.json cannot express is an error, not a silent change."""
    unsupported = {"n_shared_experts": 0, "n_group": 1, "topk_group": 1, "scoring": "softmax",
                   "score_correction_bias": False, "routed_scaling_factor": 1.0}
    for name, value in unsupported.items():
        if getattr(cfg, name) != value:
            raise ValueError(f"qwen3_moe checkpoints have {name}={value!r}; this config has "
                             f"{getattr(cfg, name)!r}")


def save_config(checkpoint_dir: str, cfg: ModelConfig) -> None:
    with open(os.path.join(checkpoint_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config_to_dict(cfg), f, indent=2)
        f.write("\n")
