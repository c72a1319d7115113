"""A tiny Hugging Face-format policy (random weights + sentencepiece tokenizer) for trainer tests."""
import shutil

import jax
import ml_collections
import pytest

from r1jax import hf, models
from r1jax.data import R1_ZERO, SyntheticConfig, synthetic
from r1jax.tokenizer import train_sentencepiece


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_policy")
    questions = [p.question + " " + " , ".join(p.steps) for p in synthetic.generate(
        SyntheticConfig(task="arithmetic", difficulty=2, num_examples=300, seed=1))]
    corpus = questions + [R1_ZERO] * 5 + ["<think> </think> <answer> </answer>"] * 5
    tok = train_sentencepiece(corpus, str(path / "sp"), vocab_size=256,
                              user_defined_symbols=["<think>", "</think>", "<answer>", "</answer>"]
                              + [str(i) for i in range(100)])
    cfg = models.ModelConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_layers=2,
                             num_heads=4, num_kv_heads=2, head_dim=8, model_type="qwen2",
                             qkv_bias=True, tie_embeddings=True, max_position_embeddings=256,
                             eos_token_id=tok.eos_id)
    hf.save_pretrained(str(path / "model"), cfg, models.init(cfg, jax.random.key(0)))
    shutil.copyfile(tok.path, path / "model" / "tokenizer.model")
    return str(path / "model")


@pytest.fixture()
def grpo_config(tiny_policy_dir):
    """A factory of GRPO run configs small enough for a test: 4 prompts × 4 samples, 12 tokens."""
    return lambda **overrides: _tiny_grpo_config(tiny_policy_dir, **overrides)


def _tiny_grpo_config(checkpoint: str, **overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(dict(
        job="grpo", name="test", steps=4, prompts_per_step=4, seed=0,
        model=dict(checkpoint=checkpoint),
        data=dict(train="synthetic:arithmetic", test="synthetic:arithmetic", difficulty=1,
                  num_train=64, num_test=8, max_prompt_tokens=256),
        rollout=dict(max_new_tokens=12),
        grpo=dict(group_size=4, loss=dict(beta=0.04), optim=dict(learning_rate=1e-3)),
        rewards=dict(num_workers=0),
        eval=dict(every=2, num_problems=4, num_samples=2, max_new_tokens=12),
        checkpoint=dict(every=2, max_to_keep=3),
        logging=dict(tensorboard=False, progress_bar=False, samples_every=2),
    ))
    config.update_from_flattened_dict(overrides)
    return config
