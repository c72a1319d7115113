"""Cross-field resolution in the GRPO ``RunConfig``: what the config boundary fills in."""
import importlib.util
import os

import pytest

from r1jax.configdict import from_config, load_experiment
from r1jax.rl.run_config import RunConfig

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _run(max_new_tokens: int = 96, **loss) -> RunConfig:
    return from_config(RunConfig, dict(
        job="grpo", steps=1, prompts_per_step=2, model=dict(checkpoint="/m"),
        rollout=dict(max_new_tokens=max_new_tokens), grpo=dict(group_size=2, loss=loss)))


def test_dr_grpo_normalizer_defaults_to_the_completion_budget():
    run = _run(96, loss_agg="seq-mean-token-sum-norm", beta=0.0)
    assert run.grpo.loss.loss_norm_length == 96
    assert run.grpo.loss.beta == 0.0 and run.grpo.group_size == 2  # the rest is kept


def test_an_explicit_normalizer_and_other_aggregations_are_left_alone():
    assert _run(loss_agg="seq-mean-token-sum-norm", loss_norm_length=500) \
        .grpo.loss.loss_norm_length == 500
    for agg in ("seq-mean-token-mean", "token-mean"):
        assert _run(loss_agg=agg).grpo.loss.loss_norm_length is None


def test_the_dr_grpo_sweep_run_gets_the_budget_of_its_experiment():
    """The path ``launch/sweep.py`` takes: experiments/r1_zero.py with the sweep's Dr. GRPO
    overrides (which set only the aggregation), through the ConfigDict boundary."""
    config = load_experiment(os.path.join(ROOT, "experiments", "r1_zero.py"))
    spec = importlib.util.spec_from_file_location(
        "grpo_variants", os.path.join(ROOT, "experiments", "sweeps", "grpo_variants.py"))
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    (dr_grpo,) = [r for r in sweep.get_sweep("objective") if r["name"] == "dr_grpo"]
    config.update_from_flattened_dict({k: v for k, v in dr_grpo.items() if k != "name"})
    config.rollout.max_new_tokens = 80
    run = from_config(RunConfig, config)
    assert run.grpo.loss.loss_agg == "seq-mean-token-sum-norm"
    assert run.grpo.loss.loss_norm_length == 80


def test_a_bad_normalizer_is_still_refused():
    with pytest.raises(ValueError, match="loss_norm_length must be positive"):
        _run(loss_agg="seq-mean-token-sum-norm", loss_norm_length=0)
