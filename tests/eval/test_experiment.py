"""experiments/eval.py: the argument string, the config it gives, and its tiny variant running."""
import importlib.util
import json
import os

import pytest

from r1jax import pipeline
from r1jax.configdict import from_config
from r1jax.eval import RunConfig

_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "eval.py")


@pytest.fixture(scope="module")
def experiment():
    spec = importlib.util.spec_from_file_location("experiments_eval", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_argument_string(experiment):
    config = experiment.get_config("ckpt=/ckpts/run1,bench=aime,data=/data/aime24.jsonl,k=8,"
                                   "max_new_tokens=1024,pass_k=1+8,mesh=none,workers=2")
    assert config.job == "eval"
    rc = from_config(RunConfig, config).eval
    assert (rc.ckpt, rc.bench, rc.data, rc.mesh, rc.reward_workers) == (
        "/ckpts/run1", "aime", "/data/aime24.jsonl", None, 2)
    settings = rc.settings
    assert (settings.num_samples, settings.max_new_tokens, settings.pass_k) == (8, 1024, (1, 8))
    assert (settings.temperature, settings.top_p) == (0.6, 0.95)  # the paper's, untouched
    paper = from_config(RunConfig, experiment.get_config("ckpt=/c,bench=aime,data=/d.jsonl")).eval.settings
    assert (paper.num_samples, paper.max_new_tokens, paper.pass_k) == (64, 32_768, (1, 64))


def test_bad_arguments(experiment):
    with pytest.raises(ValueError, match="bad argument 'kk=8'"):
        experiment.get_config("ckpt=/c,kk=8")
    with pytest.raises(ValueError, match="k='many' is not a valid value"):
        experiment.get_config("ckpt=/c,k=many")
    with pytest.raises(ValueError, match="eval.ckpt is required"):
        from_config(RunConfig, experiment.get_config())


def test_tiny_variant_runs(experiment, tiny_checkpoint, tmp_path):
    """The default (tiny CPU) variant as shipped — fsdp mesh over every device, reward workers —
    shrunk to 3 problems × 2 samples × 8 tokens."""
    config = experiment.get_config(f"ckpt={tiny_checkpoint},num_problems=3,k=2,max_new_tokens=8,batch_size=3")
    config.eval.progress = False
    result = pipeline.run(config, str(tmp_path))
    summary = json.load(open(tmp_path / "eval" / "countdown-d2" / "summary.json"))
    assert summary["metrics"]["num_problems"] == 3 and len(result.records) == 3
