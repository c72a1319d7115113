"""The GRPO training loop end to end on a tiny policy: files, resume, and bad configs."""
import os

import numpy as np
import pytest
from safetensors.numpy import load_file

from r1jax import pipeline
from r1jax.configdict import ConfigError
from r1jax.metrics import read_jsonl


def _params(workdir):
    return load_file(os.path.join(workdir, "export", "model.safetensors"))


def _deterministic_rows(workdir, name="metrics.jsonl"):
    return read_jsonl(os.path.join(workdir, name))


def test_run_writes_metrics_eval_checkpoints_and_reports(grpo_config, tmp_path):
    workdir = str(tmp_path / "run")
    summary = pipeline.run(grpo_config(), workdir)
    rows = _deterministic_rows(workdir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for key in ("loss", "kl", "reward", "accuracy", "format", "response_length", "think_length",
                "clip_frac_low", "grad_norm", "entropy", "frac_zero_std", "truncation_rate"):
        assert key in rows[0], key
    assert not [key for key in rows[0] if key.startswith("moe/")]  # a dense policy: no MoE keys
    evals = _deterministic_rows(workdir, "eval.jsonl")
    assert [r["step"] for r in evals] == [0, 2, 4] and "pass@1" in evals[0]
    assert summary["final"]["pass@1"] == evals[-1]["pass@1"]
    for name in ("curves.png", "summary.md", "summary.json", "samples.jsonl", "config.json",
                 "export/config.json", "export/model.safetensors", "export/tokenizer.model"):
        assert os.path.isfile(os.path.join(workdir, name)), name
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]


def test_resumed_run_ends_exactly_like_an_uninterrupted_one(grpo_config, tmp_path):
    straight = str(tmp_path / "straight")
    pipeline.run(grpo_config(), straight)
    interrupted = str(tmp_path / "interrupted")
    pipeline.run(grpo_config(steps=2), interrupted)  # stops after the step-2 checkpoint
    pipeline.run(grpo_config(), interrupted)  # same experiment, longer: resumes at step 2
    a, b = _params(straight), _params(interrupted)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert _deterministic_rows(straight) == _deterministic_rows(interrupted)
    assert _deterministic_rows(straight, "eval.jsonl") == _deterministic_rows(interrupted,
                                                                               "eval.jsonl")


def test_config_errors_name_the_field(grpo_config, tmp_path):
    bad = grpo_config()
    bad.grpo.loss.kl_estimator = "k9"
    with pytest.raises(ConfigError, match=r"config.grpo.loss.*kl_estimator 'k9'"):
        pipeline.run(bad, str(tmp_path / "a"))
    bad = grpo_config()
    bad.grpo.num_minibatches = 3
    with pytest.raises(ConfigError, match="do not split into grpo.num_minibatches = 3"):
        pipeline.run(bad, str(tmp_path / "b"))
    bad = grpo_config()
    with bad.unlocked():
        bad.grpo.loss.epsilon_hihg = 0.3
    with pytest.raises(ConfigError, match=r"config.grpo.loss.epsilon_hihg: unknown setting"):
        pipeline.run(bad, str(tmp_path / "c"))
    bad = grpo_config()
    bad.model.checkpoint = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="missing"):
        pipeline.run(bad, str(tmp_path / "d"))


def test_a_workdir_from_another_config_is_refused(grpo_config, tmp_path):
    workdir = str(tmp_path / "run")
    pipeline.run(grpo_config(steps=1, **{"eval.every": 0}), workdir)
    other = grpo_config(steps=2, **{"grpo.loss.beta": 0.0})
    with pytest.raises(ValueError, match=r"different config \(grpo.loss.beta"):
        pipeline.run(other, workdir)


def test_time_budget_stops_early_then_evaluates_and_exports(grpo_config, tmp_path):
    workdir = str(tmp_path / "run")
    summary = pipeline.run(grpo_config(steps=50, time_budget_s=1e-3, **{"eval.every": 0}),
                           workdir)
    assert summary["steps"] == 1  # the budget is checked after each step
    assert [r["step"] for r in _deterministic_rows(workdir)] == [1]
    assert os.path.isfile(os.path.join(workdir, "export", "model.safetensors"))


def test_paged_rollouts_train_as_lockstep_rollouts_do(grpo_config, tmp_path):
    """The engine changes how samples are drawn, not which: same samples, rewards, evaluation."""
    runs = {}
    for kind in ("lockstep", "paged"):
        config = grpo_config(steps=2)
        config.rollout.engine = dict(kind=kind, decode_slots=5, page_size=8)
        runs[kind] = str(tmp_path / kind)
        pipeline.run(config, runs[kind])
    lock, paged = (_deterministic_rows(runs[k]) for k in ("lockstep", "paged"))
    for a, b in zip(lock, paged):
        for key in ("reward", "accuracy", "format", "response_length", "truncation_rate"):
            assert a[key] == b[key], key
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-4, atol=1e-6)
    assert _deterministic_rows(runs["lockstep"], "samples.jsonl") == _deterministic_rows(
        runs["paged"], "samples.jsonl")
    assert [r["pass@1"] for r in _deterministic_rows(runs["lockstep"], "eval.jsonl")] == [
        r["pass@1"] for r in _deterministic_rows(runs["paged"], "eval.jsonl")]
