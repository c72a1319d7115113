"""The policy a trainer starts from and what it exports: Hugging Face-format directories.

A run starts from a checkpoint directory (config.json, safetensors, tokenizer) or, without one,
from a preset with random weights; it ends by exporting its parameters and tokenizer in the same
format, which evaluation and the next stage of a pipeline load.
"""
from __future__ import annotations

import dataclasses
import os
import shutil

import jax

from r1jax import hf, models
from r1jax.sharding import Sharding
from r1jax.tokenizer import Tokenizer, load_tokenizer


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where the policy starts: a Hugging Face-format directory (weights + tokenizer) or, without
    one, a preset with random weights (benchmarks, tests). With both, the checkpoint must have the
    preset's architecture (the preset also lets ``launch/aot.py`` size a run without the weights).
    ``pretrain_config`` names the experiment that produces a missing ``checkpoint``."""

    checkpoint: str | None = None
    preset: str | None = None
    tokenizer: str | None = None
    pretrain_config: str | None = None
    dtype: str | None = None
    remat: str = "none"

    def __post_init__(self):
        if self.checkpoint is None and self.preset is None:
            raise ValueError("set model.checkpoint (a Hugging Face directory) or model.preset")
        if self.checkpoint is None and self.tokenizer is None:
            raise ValueError("model.preset without a checkpoint needs model.tokenizer (a "
                             "tokenizer.json or .model file)")


def load_policy(source: ModelSource, sharding: Sharding):
    """``(model_cfg, params, tokenizer)``: a Hugging Face-format checkpoint placed on the mesh, or
    a preset with random weights (for benchmarks and tests). A checkpoint's architecture is its
    ``config.json``'s, checked against ``model.preset`` (when set) before any weight is read."""
    if source.checkpoint is not None:
        if not os.path.isdir(source.checkpoint):
            raise FileNotFoundError(
                f"model.checkpoint {source.checkpoint!r} does not exist; point it at a Hugging "
                "Face-format directory (config.json + *.safetensors + tokenizer)")
        if source.preset is not None:
            check_architecture(hf.load_config(source.checkpoint), source)
        model_cfg, params = hf.load_pretrained(source.checkpoint, mesh=sharding.mesh,
                                               dtype=source.dtype, rules=sharding.rules)
        model_cfg = model_cfg.replace(remat=source.remat)
    else:
        overrides = {"remat": source.remat}
        if source.dtype:
            overrides.update(dtype=source.dtype, param_dtype=source.dtype)
        model_cfg = models.get_config(source.preset, **overrides)
        params = models.init_sharded(model_cfg, jax.random.key(0), sharding)
    tokenizer = load_tokenizer(source.tokenizer or source.checkpoint)
    if tokenizer.vocab_size > model_cfg.vocab_size:
        raise ValueError(f"tokenizer {tokenizer.path} has {tokenizer.vocab_size} tokens but the "
                         f"model's vocabulary is {model_cfg.vocab_size}")
    return model_cfg, params, tokenizer


# What makes a checkpoint the preset it is said to be: shapes, and the positions and RoPE that its
# run's budgets and numerics depend on (Qwen2.5-7B and Qwen2.5-Math-7B differ only in these), and
# for a mixture of experts its experts and routing (two MoEs of one width can differ only there;
# a dense config has their defaults, so dense checks are unchanged).
ARCHITECTURE_FIELDS = ("model_type", "vocab_size", "hidden_size", "intermediate_size",
                       "num_layers", "num_heads", "num_kv_heads", "head_dim", "tie_embeddings",
                       "qkv_bias", "qk_norm", "max_position_embeddings", "rope_theta",
                       "rope_scaling", "n_routed_experts", "num_experts_per_tok",
                       "moe_intermediate_size", "n_shared_experts", "n_group", "topk_group",
                       "scoring", "score_correction_bias", "norm_topk_prob",
                       "routed_scaling_factor", "first_k_dense_replace", "q_lora_rank",
                       "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                       "rope_interleave", "attention_bias")


def check_architecture(loaded: models.ModelConfig, source: ModelSource) -> None:
    """``loaded`` (the checkpoint's config.json) must be ``source.preset``'s architecture; the
    error names both, every field that differs, and the preset the checkpoint does match."""
    preset = models.get_config(source.preset)
    differ = [f for f in ARCHITECTURE_FIELDS if getattr(loaded, f) != getattr(preset, f)]
    if not differ:
        return
    fields = "; ".join(f"{f} {getattr(loaded, f)} (preset: {getattr(preset, f)})" for f in differ)
    matches = [name for name, cfg in models.PRESETS.items()
               if all(getattr(loaded, f) == getattr(cfg, f) for f in ARCHITECTURE_FIELDS)]
    hint = (f"it is the {matches[0]!r} architecture: set model.preset={matches[0]} (model="
            f"{matches[0]} in an experiment)" if matches else
            "no preset matches it: clear model.preset (None) to take the architecture from "
            "config.json alone")
    raise ValueError(f"model.checkpoint {source.checkpoint} is not model.preset "
                     f"{source.preset!r}: its config.json has {fields}; {hint}, or point "
                     f"model.checkpoint at a {source.preset} checkpoint")


def export_policy(path: str, model_cfg: models.ModelConfig, params, tokenizer: Tokenizer) -> None:
    """Params in Hugging Face format plus the tokenizer file: what evaluation and later stages load."""
    hf.save_pretrained(path, model_cfg, params)
    if jax.process_index() == 0:
        target = "tokenizer.json" if tokenizer.path.endswith(".json") else "tokenizer.model"
        shutil.copyfile(tokenizer.path, os.path.join(path, target))
        for name in ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
            extra = os.path.join(os.path.dirname(tokenizer.path), name)
            if target == "tokenizer.json" and os.path.isfile(extra):
                shutil.copyfile(extra, os.path.join(path, name))
