"""The pretraining job end to end on a miniature config: files, checksums, reload, determinism."""
import hashlib
import os

import numpy as np
import pytest
from safetensors.numpy import load_file

from r1jax import hf, pipeline
from r1jax.configdict import ConfigError, from_config
from r1jax.pretrain import PretrainConfig
from r1jax.tokenizer import load_tokenizer

EXPERIMENT = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "pretrain_tiny.py")


def _config(arg):
    return pipeline.load_experiment(f"{EXPERIMENT}:{arg}" if arg else EXPERIMENT)


def test_experiment_config_loads_and_validates():
    cfg = from_config(PretrainConfig, _config(None))
    assert cfg.job == "pretrain" and cfg.output_dir == "experiments/assets/tiny_base"
    assert cfg.corpus.build().test_fraction == 0.1
    smoke = from_config(PretrainConfig, _config("smoke"))
    assert smoke.output_dir == "" and smoke.train.steps < 10
    assert from_config(PretrainConfig, _config("steps=50,out=/tmp/x")).train.steps == 50
    with pytest.raises(ValueError, match="bad argument"):
        _config("stepz=3")
    bad = _config("smoke")
    bad.train.warmup_steps = 50
    with pytest.raises(ConfigError, match=r"train.warmup_steps \(50\) must be below"):
        from_config(PretrainConfig, bad)
    with bad.unlocked():
        bad.train.stepz = 3
    with pytest.raises(ConfigError, match="config.train.stepz: unknown setting"):
        from_config(PretrainConfig, bad)


def test_miniature_pretraining_runs_end_to_end_and_is_deterministic(tmp_path):
    config = _config("smoke")
    summary = pipeline.run(config, str(tmp_path / "a"))
    base = tmp_path / "a" / "base"
    for name in ("config.json", "model.safetensors", "tokenizer.model", "SHA256SUMS"):
        assert (base / name).is_file(), name
    for line in (base / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((base / name).read_bytes()).hexdigest() == digest
    model_cfg, params = hf.load_pretrained(str(base))
    tokenizer = load_tokenizer(str(base))
    assert model_cfg.vocab_size == tokenizer.vocab_size and model_cfg.eos_token_id == tokenizer.eos_id
    assert all(len(tokenizer.encode(f"= {i}")) == 2 for i in range(101))  # "▁=", "▁i"
    assert {"d2/latent_greedy", "d2/template_pass@1", "d2/template_format_rate"} <= set(
        summary["probe"])
    assert summary["tokens"] > 0 and (tmp_path / "a" / "pretrain_log.jsonl").is_file()

    # The same config (the probe left out) gives the same bytes.
    again = _config("smoke")
    again.probe.num_problems = 0
    pipeline.run(again, str(tmp_path / "b"))
    assert (tmp_path / "b" / "base" / "SHA256SUMS").read_bytes() == \
        (base / "SHA256SUMS").read_bytes()
    a = load_file(str(base / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "base" / "model.safetensors"))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
