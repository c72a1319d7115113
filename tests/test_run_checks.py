"""Start-up validation of the paper's recipes (``r1jax/run_checks.py``): every real variant's
budgets fit its base, and settings that cannot run are named with the field and the fix — checked
on configs and model configs alone, with nothing loaded or compiled. The runs themselves are in
``tests/test_real_recipes.py``."""
import importlib
import os

import pytest

from r1jax import models, pipeline, run_checks
from r1jax import stages as stage_chain
from r1jax.configdict import from_config, load_experiment
from r1jax.rl.run_config import RunConfig as GRPORunConfig
from r1jax.sharding import Sharding, make_mesh
from r1jax.tokenizer import load_tokenizer

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "experiments")
VARIANTS = ("qwen2.5-math-1.5b", "qwen2.5-math-7b", "qwen2.5-1.5b", "qwen2.5-7b", "qwen2.5-32b",
            "llama3.1-8b", "llama3.3-70b")


def _set(config: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for key in path:
        config = config[key]
    config[last] = value


def _sharding(**mesh):
    return Sharding(make_mesh(mesh or {"fsdp": -1}))  # the recipes' mesh: FSDP over all 8 devices


def _run_config(stage: dict):
    """What ``pipeline.run`` makes of a stage: its job's ``RunConfig``."""
    return from_config(importlib.import_module(pipeline.JOBS[stage["job"]]).RunConfig, stage)


def _grpo(arg, **overrides) -> GRPORunConfig:
    config = load_experiment(os.path.join(EXPERIMENTS, "r1_zero.py") + ":" + arg).to_dict()
    for key, value in overrides.items():
        _set(config, key, value)
    return from_config(GRPORunConfig, config)


@pytest.mark.parametrize("model", VARIANTS)
def test_every_r1_zero_budget_fits_its_base(model):
    cfg = _grpo(f"model={model},ckpt=/m")
    base = models.get_config(model)
    assert run_checks.grpo_problems(cfg, base, _sharding()) == []
    used = cfg.data.max_prompt_tokens + cfg.rollout.max_new_tokens
    assert used == (4096 if "math" in model else 1024 + 32_768) <= base.max_position_embeddings
    assert cfg.eval.max_new_tokens == cfg.rollout.max_new_tokens


@pytest.mark.parametrize("arg, base", [
    ("r1.py:model=qwen2.5-math-7b,ckpt=/m", "qwen2.5-math-7b"),
    ("r1.py:model=qwen2.5-7b,ckpt=/m", "qwen2.5-7b"),
    ("r1.py:model=llama3.1-8b,ckpt=/m", "llama3.1-8b"),
    ("distill.py:student=qwen2.5-math-1.5b,student_ckpt=/m,teacher=/t", "qwen2.5-math-1.5b"),
    ("distill.py:student=llama3.3-70b,student_ckpt=/m,teacher=/t", "llama3.3-70b"),
])
def test_every_stage_of_the_real_chains_fits_its_base(arg, base):
    """Each training and sampling stage against its base's architecture (a teacher is taken to
    have the student's context, as an R1 export of the same base does)."""
    config = load_experiment(os.path.join(EXPERIMENTS, arg))
    base = models.get_config(base)
    checks = {"grpo": run_checks.check_grpo, "sft": run_checks.check_sft,
              "reward_model": run_checks.check_reward_model, "traces": run_checks.check_traces}
    checked = []
    for name in config.order:
        stage = stage_chain.resolve_workdir(config.stages[name].to_dict(), "/runs/x")
        if stage["job"] in checks:
            checks[stage["job"]](_run_config(stage), base, _sharding())
            checked.append(stage["job"])
    assert "sft" in checked and "traces" in checked


def test_the_old_readme_budget_on_qwen_math_is_refused_naming_the_fields():
    """README's real-scale command: 1,024 prompt + 32,768 new tokens on a 4,096-position model."""
    cfg = _grpo("model=qwen2.5-math-7b,ckpt=/models/Qwen2.5-Math-7B,max_new_tokens=32768",
                **{"eval.max_new_tokens": 32_768})
    with pytest.raises(run_checks.RunCheckError) as info:
        run_checks.check_grpo(cfg, models.get_config("qwen2.5-math-7b"), _sharding())
    message = str(info.value)
    assert message.startswith("grpo: 2 setting(s) cannot run on this model and mesh:")
    assert ("data.max_prompt_tokens + rollout.max_new_tokens = 1024 + 32768 = 33792 positions, "
            "but model.checkpoint /models/Qwen2.5-Math-7B has 4096 (max_position_embeddings in "
            "its config.json); lower rollout.max_new_tokens to 3072 or less") in message
    assert "data.max_prompt_tokens + eval.max_new_tokens = 1024 + 32768" in message
    assert "lower eval.max_new_tokens to 3072 or less" in message


def test_rope_scaling_extends_the_positions():
    cfg = models.get_config("tiny").replace(max_position_embeddings=4096, rope_scaling=dict(
        factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=1024))
    assert run_checks.position_limit(cfg) == 8192
    assert run_checks.position_limit(models.get_config("llama3.1-8b")) == 131_072


def test_batches_that_do_not_divide_the_batch_shards_are_named():
    tiny = "ckpt=/m"
    model_cfg = models.get_config("tiny")
    problems = run_checks.grpo_problems(
        _grpo(tiny, prompts_per_step=3, **{"grpo.group_size": 2, "eval.num_samples": 2}),
        model_cfg, _sharding())
    assert problems[0] == (
        "prompts_per_step × grpo.group_size = 3 × 2 = 6 rows do not divide over the 8 devices of "
        "the batch axis (mesh data=1 × fsdp=8), so every device would compute all of them; make "
        "prompts_per_step a multiple of 4 (e.g. 4) or use fewer devices for the batch")
    assert "a held-out evaluation batch (prompts_per_step × eval.num_samples = 3 × 2) = 6 rows" \
        in problems[1] and problems[1].endswith("make eval.num_samples a multiple of 8")
    (minibatch,) = run_checks.grpo_problems(
        _grpo(tiny, prompts_per_step=8, **{"grpo.group_size": 4, "grpo.num_minibatches": 8}),
        model_cfg, _sharding())
    assert minibatch.startswith("a minibatch (rollout rows / grpo.num_minibatches = 32 / 8) = 4 "
                                "rows") and minibatch.endswith("lower grpo.num_minibatches to 4 "
                                                               "or raise prompts_per_step")
    (microbatch,) = run_checks.grpo_problems(
        _grpo(tiny, prompts_per_step=8, **{"grpo.group_size": 4, "grpo.num_microbatches": 8}),
        model_cfg, _sharding())
    assert microbatch.startswith("a microbatch (minibatch rows / grpo.num_microbatches = 32 / 8)")
    # Data parallelism over 2 of the 8 devices counts too (the batch axis is data × fsdp).
    assert run_checks.batch_shards(_sharding(data=2, fsdp=4)) == (8, "data=2 × fsdp=4")
    assert run_checks.grpo_problems(_grpo(tiny, prompts_per_step=3), model_cfg,
                                    _sharding(tensor=8)) == []  # no batch axis: nothing to split


def test_sft_reward_model_and_fsdp_problems_are_named():
    from r1jax.rm.train import RunConfig as RMRunConfig
    from r1jax.sft.train import RunConfig as SFTRunConfig

    math7b = models.get_config("qwen2.5-math-7b")
    sft = from_config(SFTRunConfig, dict(
        job="sft", model=dict(checkpoint="/m"), data=dict(train="/d.jsonl", seq_len=8192),
        batch_rows=12, sft=dict(num_microbatches=5)))
    with pytest.raises(run_checks.RunCheckError) as info:
        run_checks.check_sft(sft, math7b, _sharding())
    assert ("data.seq_len = 8192 positions, but model.checkpoint /m has 4096 (max_position_"
            "embeddings in its config.json); lower data.seq_len to 4096 or less") in str(info.value)
    assert "batch_rows = 12 rows do not divide over the 8 devices" in str(info.value)
    assert "batch_rows = 12 does not split into sft.num_microbatches = 5" in str(info.value)
    rm = from_config(RMRunConfig, dict(job="reward_model", model=dict(checkpoint="/m"),
                                       batch_pairs=2, data=dict(max_tokens=4096)))
    with pytest.raises(run_checks.RunCheckError, match=r"2 × batch_pairs / num_microbatches = "
                       r"2 × 2 / 1\) = 4 rows do not divide .* make batch_pairs a multiple of 4"):
        run_checks.check_reward_model(rm, math7b, _sharding())
    with pytest.raises(run_checks.RunCheckError, match=r"hidden_size 36 does not divide over "
                       r"mesh.fsdp = 8, .* \(e.g. 6\)"):
        run_checks.check_grpo(_grpo("ckpt=/m"), models.get_config("tiny").replace(
            hidden_size=36), _sharding())


def test_a_template_the_tokenizer_cannot_write_is_named():
    tiny_base = os.path.join(EXPERIMENTS, "assets", "tiny_base")
    tok = load_tokenizer(tiny_base)
    model_cfg = models.get_config("tiny")
    (chatml,) = run_checks.grpo_problems(_grpo("ckpt=/m", **{"data.template": "chatml"}),
                                         model_cfg, _sharding(), tok)
    assert chatml.startswith("data.template 'chatml' writes '<|im_end|>', which is not a token")
    (own,) = run_checks.grpo_problems(_grpo("ckpt=/m", **{"data.template": "tokenizer"}),
                                      model_cfg, _sharding(), tok)
    assert own.startswith("data.template: ") and "has no chat template" in own
