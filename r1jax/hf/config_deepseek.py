"""The DeepSeek-V3 part of ``config.json``: Multi-head Latent Attention, YaRN, DeepSeekMoE.

DeepSeek's own ``config.json`` (and transformers' ``DeepseekV3Config``) name the router's scoring
``scoring_func`` and its expert choice ``topk_method``: ``noaux_tc`` is sigmoid scores with the
score-correction bias ``e_score_correction_bias`` and group-limited top-k (DeepSeek-V3/R1),
``greedy`` a plain top-k (V2-Lite, softmax). transformers' DeepseekV3 implements the first only,
so a softmax checkpoint written here loads in r1jax but not as transformers' DeepseekV3.
"""
from __future__ import annotations

from typing import Any

from r1jax.hf.errors import CheckpointError
from r1jax.models.config import ModelConfig
from r1jax.models.yarn import YarnScaling

_MLA_KEYS = ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
_MOE_KEYS = ("n_routed_experts", "num_experts_per_tok", "moe_intermediate_size")


def yarn_from(scaling: dict[str, Any], path: str) -> YarnScaling:
    """``rope_scaling``/``rope_parameters`` with ``rope_type: yarn`` as a ``YarnScaling``.

    An absent ``mscale`` is 0, not 1: the cos/sin factor is then ``mscale(factor)`` alone, as
    transformers computes it when either of ``mscale``/``mscale_all_dim`` is missing.
    """
    try:
        return YarnScaling(
            factor=float(scaling["factor"]),
            original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
            beta_fast=float(scaling.get("beta_fast") or 32.0),
            beta_slow=float(scaling.get("beta_slow") or 1.0),
            mscale=float(scaling.get("mscale") or 0.0),
            mscale_all_dim=float(scaling.get("mscale_all_dim") or 0.0),
            attention_factor=scaling.get("attention_factor"),
            truncate=bool(scaling.get("truncate", True)),
        )
    except KeyError as e:
        raise CheckpointError(f"{path}: yarn rope scaling lacks key {e.args[0]!r}") from None


def deepseek_v3_fields(raw: dict[str, Any], num_heads: int, path: str) -> dict[str, Any]:
    """The ``ModelConfig`` fields of a ``deepseek_v3`` config.json beyond the common ones."""
    for key in _MLA_KEYS + _MOE_KEYS:
        if raw.get(key) is None:
            raise CheckpointError(f"{path}: missing key {key!r} (required for deepseek_v3)")
    kv_heads = raw.get("num_key_value_heads") or num_heads
    if int(kv_heads) != num_heads:
        raise CheckpointError(f"{path}: key 'num_key_value_heads' is {kv_heads}; MLA has one "
                              f"key/value head per query head ({num_heads})")
    if int(raw.get("moe_layer_freq", 1)) != 1:
        raise CheckpointError(f"{path}: key 'moe_layer_freq' is {raw['moe_layer_freq']}; r1jax "
                              "supports MoE in every layer after first_k_dense_replace only")
    scoring = raw.get("scoring_func", "sigmoid")
    method = raw.get("topk_method", "noaux_tc" if scoring == "sigmoid" else "greedy")
    if (scoring, method) not in (("sigmoid", "noaux_tc"), ("softmax", "greedy")):
        raise CheckpointError(f"{path}: keys 'scoring_func'/'topk_method' are {scoring!r}/"
                              f"{method!r}; supported: 'sigmoid'/'noaux_tc' (DeepSeek-V3) and "
                              "'softmax'/'greedy'")
    q_lora = raw.get("q_lora_rank")
    return {
        **{key: int(raw[key]) for key in _MLA_KEYS + _MOE_KEYS},
        "q_lora_rank": None if q_lora is None else int(q_lora),
        "head_dim": int(raw["qk_rope_head_dim"]),
        "num_kv_heads": num_heads,
        "rope_interleave": bool(raw.get("rope_interleave", True)),
        "attention_bias": bool(raw.get("attention_bias", False)),
        "n_shared_experts": int(raw.get("n_shared_experts") or 0),
        "n_group": int(raw.get("n_group") or 1),
        "topk_group": int(raw.get("topk_group") or 1),
        "scoring": scoring,
        "score_correction_bias": method == "noaux_tc",
        "norm_topk_prob": bool(raw.get("norm_topk_prob", False)),
        "routed_scaling_factor": float(raw.get("routed_scaling_factor", 1.0)),
        "first_k_dense_replace": int(raw.get("first_k_dense_replace") or 0),
    }


def deepseek_v3_to_dict(cfg: ModelConfig) -> dict[str, Any]:
    """The DeepSeek-V3 keys of ``cfg``'s config.json (the common ones are the caller's)."""
    if cfg.score_correction_bias != (cfg.scoring == "sigmoid"):
        raise ValueError("deepseek_v3 checkpoints pair sigmoid scores with the score-correction "
                         "bias (topk_method 'noaux_tc') and softmax scores with none ('greedy'); "
                         f"this config has scoring={cfg.scoring!r}, score_correction_bias="
                         f"{cfg.score_correction_bias}")
    raw: dict[str, Any] = {
        **{key: getattr(cfg, key) for key in _MLA_KEYS + _MOE_KEYS},
        "q_lora_rank": cfg.q_lora_rank,
        "rope_interleave": cfg.rope_interleave,
        "attention_bias": cfg.attention_bias,
        "n_shared_experts": cfg.n_shared_experts,
        "n_group": cfg.n_group,
        "topk_group": cfg.topk_group,
        "scoring_func": cfg.scoring,
        "topk_method": "noaux_tc" if cfg.scoring == "sigmoid" else "greedy",
        "norm_topk_prob": cfg.norm_topk_prob,
        "routed_scaling_factor": cfg.routed_scaling_factor,
        "first_k_dense_replace": cfg.first_k_dense_replace,
        "moe_layer_freq": 1,
        "num_nextn_predict_layers": 0,  # no multi-token-prediction layers are written
    }
    s = cfg.rope_scaling
    if s is not None:
        raw["rope_scaling"] = {
            "rope_type": "yarn", "factor": s.factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
            "beta_fast": s.beta_fast, "beta_slow": s.beta_slow, "mscale": s.mscale,
            "mscale_all_dim": s.mscale_all_dim, "truncate": s.truncate,
        }
        if s.attention_factor is not None:
            raw["rope_scaling"]["attention_factor"] = s.attention_factor
    return raw
