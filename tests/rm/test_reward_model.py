"""Preference reward model: Bradley–Terry loss, pair data, training to rank held-out pairs, scoring."""
import json
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from r1jax import hf, models, pipeline, rm
from r1jax.data import DataError
from r1jax.data.preferences import WORDS, load_pairs, synthetic_pairs
from r1jax.tokenizer import train_sentencepiece


def test_bradley_terry_loss_against_float64():
    rng = np.random.default_rng(0)
    chosen, rejected = rng.normal(size=16) * 3, rng.normal(size=16) * 3
    loss, accuracy = rm.bradley_terry_loss(jnp.asarray(chosen, jnp.float32),
                                           jnp.asarray(rejected, jnp.float32))
    expected = np.mean(np.log1p(np.exp(-(chosen - rejected))))
    assert abs(float(loss) - expected) < 1e-6
    assert float(accuracy) == np.mean(chosen > rejected)
    grad = jax.grad(lambda c: rm.bradley_terry_loss(c, jnp.asarray(rejected, jnp.float32))[0])(
        jnp.asarray(chosen, jnp.float32))
    np.testing.assert_allclose(grad, -1 / (1 + np.exp(chosen - rejected)) / 16, atol=1e-6)


def test_pair_files_are_checked_line_by_line(tmp_path):
    good = {"prompt": "Say hi.", "chosen": "hi", "rejected": "bye"}
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({"question": "Q", "chosen": "a",
                                                          "rejected": "b"}) + "\n")
    assert [p.prompt for p in load_pairs(path)] == ["Say hi.", "Q"]
    for line, match in [("{not json", "pairs.jsonl:2: not a JSON line"),
                        (json.dumps({"prompt": "x", "chosen": "a"}), "line 2|pairs.jsonl:2 field 'rejected'"),
                        (json.dumps({"prompt": "x", "chosen": "a", "rejected": "a"}), "identical")]:
        path.write_text(json.dumps(good) + "\n" + line + "\n")
        with pytest.raises(DataError, match=match):
            load_pairs(path)


def test_synthetic_splits_are_disjoint():
    train = {p.prompt for p in synthetic_pairs(2000, split="train")}
    test = {p.prompt for p in synthetic_pairs(300, split="test")}
    assert not train & test
    assert all(p.chosen != p.rejected for p in synthetic_pairs(300, split="test"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small reward model trained from scratch on the say/repeat preference tasks."""
    root = tmp_path_factory.mktemp("rm")
    pairs = synthetic_pairs(400, split="train")
    corpus = [f"{p.prompt} {p.chosen} {p.rejected}" for p in pairs]
    tok = train_sentencepiece(corpus, str(root / "sp"), vocab_size=256,
                              user_defined_symbols=list(WORDS) + [str(i) for i in range(50)])
    cfg = models.ModelConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
                             num_heads=4, num_kv_heads=2, head_dim=16, model_type="qwen2",
                             qkv_bias=True, tie_embeddings=True, max_position_embeddings=128)
    hf.save_pretrained(str(root / "base"), cfg, models.init(cfg, jax.random.key(0)))
    shutil.copyfile(tok.path, root / "base" / "tokenizer.model")
    config = ml_collections.ConfigDict(dict(
        job="reward_model", model=dict(checkpoint=str(root / "base")),
        data=dict(num_train=25600, num_test=300, max_tokens=48, kinds=("say", "repeat")),
        optim=dict(learning_rate=3e-3, warmup_steps=20, schedule="cosine", total_steps=800,
                   final_lr_fraction=0.05), batch_pairs=32, eval_every=0,
        checkpoint_every=1000, progress_bar=False, mesh=dict(data=-1, fsdp=1, tensor=1)))
    return pipeline.run(config, str(root / "work"))


def test_trained_reward_model_ranks_held_out_pairs(trained):
    assert trained["initial"]["accuracy"] < 0.6
    assert trained["final"]["accuracy"] > 0.9


def test_scorer_scores_answers_of_completions(trained):
    scorer = rm.RewardModelScorer(trained["export"], max_tokens=48)
    pairs = synthetic_pairs(100, split="test", kinds=("say", "repeat"))
    prompts = [p.prompt for p in pairs]
    chosen = scorer.score(prompts, [p.chosen for p in pairs])
    rejected = scorer.score(prompts, [p.rejected for p in pairs])
    assert np.mean(chosen > rejected) > 0.9
    # A completion is judged on its <answer> when it has one.
    wrapped = scorer.score(prompts, [f"<think> thinking </think> <answer>{p.chosen}</answer>"
                                     for p in pairs])
    np.testing.assert_allclose(wrapped, chosen, rtol=1e-5, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="not a reward model export"):
        rm.RewardModelScorer(str(trained["export"]) + "/..")
