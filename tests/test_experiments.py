"""The multi-stage experiment configs (experiments/r1.py, experiments/distill.py): every variant
loads, every stage validates against its job's run config, and stage outputs feed the next stage."""
import os

import ml_collections
import pytest

from r1jax import pipeline
from r1jax.configdict import from_config
from r1jax.eval.run_config import RunConfig as EvalRunConfig
from r1jax.rl.run_config import GRPORunConfig
from r1jax.rm.train import RMRunConfig
from r1jax.sft.rejection import TraceRunConfig
from r1jax.sft.train import SFTRunConfig

EXPERIMENTS = os.path.join(os.path.dirname(__file__), "..", "experiments")
VALIDATE = {
    "grpo": GRPORunConfig.from_config,
    "sft": lambda c: from_config(SFTRunConfig, c),
    "traces": lambda c: from_config(TraceRunConfig, c),
    "reward_model": lambda c: from_config(RMRunConfig, c),
    "eval": EvalRunConfig.from_config,
}


def _stages(arg: str) -> dict:
    config = pipeline.load_experiment(os.path.join(EXPERIMENTS, arg))
    assert config.job == "stages" and set(config.order) == set(config.stages)
    resolved = {}
    for name in config.order:
        stage = ml_collections.ConfigDict(
            pipeline._resolve(config.stages[name].to_dict(), "/runs/x"))  # noqa: SLF001
        VALIDATE[stage.job](stage)
        resolved[name] = stage
    return resolved


@pytest.mark.parametrize("arg", [
    "r1.py", "r1.py:seed=3",
    "r1.py:model=qwen2.5-math-7b,ckpt=/m,train=/d/t.jsonl,general=/d/g.jsonl",
    "distill.py", "distill.py:budget=60,seed=2", "distill.py:teacher=/ckpts/t",
    "distill.py:student=qwen2.5-1.5b,student_ckpt=/m,teacher=/t,test=/d/m.jsonl",
])
def test_every_variant_loads_and_every_stage_validates(arg):
    assert _stages(arg)


def test_r1_stages_chain_their_outputs():
    stages = _stages("r1.py")
    assert list(stages) == ["cold_start", "reasoning_rl", "rejection", "sft_mix", "reward_model",
                            "all_rl"]
    assert stages["reasoning_rl"].model.checkpoint == "/runs/x/cold_start/export"
    assert stages["rejection"].model.checkpoint == "/runs/x/reasoning_rl/export"
    assert stages["sft_mix"].data.train.startswith("/runs/x/rejection/out/data.jsonl+")
    assert stages["all_rl"].rewards.reward_model == "/runs/x/reward_model/export"
    assert stages["all_rl"].rollout.temperature == 0.7  # the paper's final-stage temperature


def test_distill_compares_sft_and_grpo_students_at_equal_time_on_one_eval():
    stages = _stages("distill.py:budget=90")
    assert stages["traces"].model.checkpoint == "/runs/x/teacher/export"
    sft, grpo = stages["student_sft"], stages["student_grpo"]
    assert sft.data.train == "/runs/x/traces/out/data.jsonl"
    assert sft.model.checkpoint == grpo.model.checkpoint and "tiny_student" in sft.model.checkpoint
    assert sft.time_budget_s == grpo.time_budget_s == 90
    evals = [stages[n].eval for n in stages if n.startswith("eval_")]
    assert [e.ckpt for e in evals] == ["/runs/x/teacher/export", sft.model.checkpoint,
                                       "/runs/x/student_sft/export", "/runs/x/student_grpo/export"]
    settings = {(e.bench, e.difficulty, e.num_problems, e.num_samples, e.temperature, e.top_p,
                 e.max_new_tokens) for e in evals}
    assert len(settings) == 1  # the same held-out problems and sampling for all four
    assert "teacher" not in _stages("distill.py:teacher=/ckpts/t")


def test_bad_arguments_name_the_key():
    with pytest.raises(ValueError, match="bad argument 'budjet=3'"):
        pipeline.load_experiment(os.path.join(EXPERIMENTS, "distill.py:budjet=3"))
    with pytest.raises(ValueError, match="bad argument 'modl=x'"):
        pipeline.load_experiment(os.path.join(EXPERIMENTS, "r1.py:modl=x"))
