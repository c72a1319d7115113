"""What a GRPO run loads before its first step: the policy, its tokenizer and the prompt sets."""
from __future__ import annotations

import os

import jax

from r1jax import hf, models
from r1jax.data import JsonlConfig, ProblemSet, SyntheticConfig, load_humaneval, load_jsonl
from r1jax.data import problem_set
from r1jax.rl.run_config import DataSource, ModelSource
from r1jax.sharding import Sharding
from r1jax.tokenizer import Tokenizer, load_tokenizer


def load_policy(source: ModelSource, sharding: Sharding):
    """``(model_cfg, params, tokenizer)``: a Hugging Face-format checkpoint placed on the mesh, or
    a preset with random weights (for benchmarks and tests)."""
    if source.checkpoint is not None:
        if not os.path.isdir(source.checkpoint):
            raise FileNotFoundError(
                f"model.checkpoint {source.checkpoint!r} does not exist; point it at a Hugging "
                "Face-format directory (config.json + *.safetensors + tokenizer)")
        model_cfg, params = hf.load_pretrained(source.checkpoint, mesh=sharding.mesh,
                                               dtype=source.dtype, rules=sharding.rules)
        model_cfg = model_cfg.replace(remat=source.remat)
        if source.preset is not None:
            _check_architecture(model_cfg, models.get_config(source.preset), source)
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


def _check_architecture(loaded: models.ModelConfig, preset: models.ModelConfig,
                        source: ModelSource) -> None:
    for field in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                  "num_kv_heads", "head_dim", "tie_embeddings", "qkv_bias", "qk_norm"):
        if getattr(loaded, field) != getattr(preset, field):
            raise ValueError(
                f"model.checkpoint {source.checkpoint} has {field}={getattr(loaded, field)} but "
                f"model.preset {source.preset!r} has {getattr(preset, field)}; fix model.preset")


def load_problems(source: DataSource, split: str) -> ProblemSet:
    """The train or test prompt set named by ``data.train`` / ``data.test``."""
    name = source.train if split == "train" else source.test
    count = source.num_train if split == "train" else source.num_test
    if name.startswith("synthetic:"):
        task = name.split(":", 1)[1]
        return problem_set(SyntheticConfig(task=task, difficulty=source.difficulty,
                                           num_examples=count, seed=source.seed, split=split,
                                           unique=split == "test"))
    if name == "humaneval":
        return load_humaneval()
    if not os.path.isfile(name):
        raise FileNotFoundError(f"data.{split} {name!r}: no such file (expected synthetic:<task>, "
                                "humaneval, or a JSONL path)")
    problems = load_jsonl(name, JsonlConfig(skip_bad_lines=source.skip_bad_lines))
    if split == "test" and count < len(problems):
        return ProblemSet(problems.problems[:count], problems.source, problems.skipped)
    return problems


def export_policy(path: str, model_cfg: models.ModelConfig, params, tokenizer: Tokenizer) -> None:
    """Params in Hugging Face format plus the tokenizer file: what evaluation and later stages load."""
    hf.save_pretrained(path, model_cfg, params)
    if jax.process_index() == 0:
        import shutil

        target = "tokenizer.json" if tokenizer.path.endswith(".json") else "tokenizer.model"
        shutil.copyfile(tokenizer.path, os.path.join(path, target))
        config = os.path.join(os.path.dirname(tokenizer.path), "tokenizer_config.json")
        if target == "tokenizer.json" and os.path.isfile(config):
            shutil.copyfile(config, os.path.join(path, "tokenizer_config.json"))
