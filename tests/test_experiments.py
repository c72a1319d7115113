"""The multi-stage experiment configs (experiments/r1.py, experiments/distill.py): every variant
loads, every stage validates against its job's run config, and stage outputs feed the next stage;
the mixture-of-experts R1-Zero variants load and the tiny one runs a step; and every experiment
file is data (it imports no r1jax module but ``r1jax.configdict``)."""
import ast
import glob
import importlib
import importlib.util
import os
import sys

import ml_collections
import pytest

from r1jax import pipeline
from r1jax import stages as stage_chain
from r1jax.configdict import from_config, load_experiment
from r1jax.distributed import DistributedConfig

EXPERIMENTS = os.path.join(os.path.dirname(__file__), "..", "experiments")


def _validate(stage: ml_collections.ConfigDict):
    """What ``pipeline.run`` makes of a stage's config: its job's ``RunConfig``."""
    raw = stage.to_dict()
    from_config(DistributedConfig, raw.pop("distributed", None) or {}, "config.distributed")
    return from_config(importlib.import_module(pipeline.JOBS[raw["job"]]).RunConfig, raw)


def _stages(arg: str) -> dict:
    config = load_experiment(os.path.join(EXPERIMENTS, arg))
    assert config.job == "stages" and set(config.order) == set(config.stages)
    resolved = {}
    for name in config.order:
        stage = ml_collections.ConfigDict(
            stage_chain.resolve_workdir(config.stages[name].to_dict(), "/runs/x"))
        _validate(stage)
        resolved[name] = stage
    return resolved


@pytest.mark.parametrize("arg", [
    "r1.py", "r1.py:seed=3",
    "r1.py:model=qwen2.5-math-7b,ckpt=/m,train=/d/t.jsonl,general=/d/g.jsonl",
    "distill.py", "distill.py:budget=60,seed=2", "distill.py:teacher=/ckpts/t",
    "distill.py:student=qwen2.5-1.5b,student_ckpt=/m,teacher=/t,test=/d/m.jsonl",
    "distill.py:student=qwen2.5-math-1.5b,student_ckpt=/m,teacher=/t,test=/d/m.jsonl",
    "r1.py:model=llama3.1-8b,ckpt=/m,test=/d/m.jsonl",
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


def _module(name):
    spec = importlib.util.spec_from_file_location(f"experiment_{name}",
                                                  os.path.join(EXPERIMENTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_r1_zero_budgets_fit_the_presets_contexts():
    """The experiment's context table is the presets' (an experiment file may not import them),
    and each base gets the paper's 32,768 new tokens where they fit after the prompt."""
    from r1jax import models

    r1_zero = _module("r1_zero")
    assert set(r1_zero.CONTEXT) == set(r1_zero.HF_REPOS)
    for model, context in r1_zero.CONTEXT.items():
        assert models.get_config(model).max_position_embeddings == context, model
        prompt, new = r1_zero.budget(model)
        # DeepSeek-V2-Lite was trained to 32k of its config's 163,840 positions.
        trained = min(context, r1_zero.TRAINED_CONTEXT.get(model, context))
        assert prompt + new <= trained
        assert (prompt, new) == {4096: (1024, 3072), 32_768: (1024, 31_744)}.get(
            trained, (1024, 32_768)), model


def test_moe_r1_zero_variants_load_with_their_base_and_expert_axis():
    tiny = _validate(load_experiment(os.path.join(EXPERIMENTS, "r1_zero.py:model=tiny-moe")))
    default = _validate(load_experiment(os.path.join(EXPERIMENTS, "r1_zero.py")))
    assert tiny.name == "r1_zero_tiny_moe"
    assert tiny.model.checkpoint.endswith("experiments/assets/tiny_moe_base")
    assert tiny.model.pretrain_config.endswith("experiments/pretrain_tiny.py:moe")
    assert load_experiment(tiny.model.pretrain_config).model.preset == "tiny-moe"
    # Everything but the base is the tiny default's.
    for field in ("steps", "prompts_per_step", "data", "rollout", "grpo", "rewards", "eval",
                  "mesh"):
        assert getattr(tiny, field) == getattr(default, field), field
    real = _validate(load_experiment(os.path.join(
        EXPERIMENTS, "r1_zero.py:model=qwen3-30b-a3b,ckpt=/m,expert=4")))
    assert real.model.preset == "qwen3-30b-a3b" and real.mesh.expert == 4
    assert real.mesh.fsdp == -1 and real.rollout.max_new_tokens == 32_768
    assert _validate(load_experiment(os.path.join(
        EXPERIMENTS, "r1_zero.py:model=qwen3-30b-a3b"))).mesh.expert == 8
    assert real.rollout.engine.kind == "paged"
    # MLA: the paged engine pages the latent cache.
    lite = _validate(load_experiment(os.path.join(EXPERIMENTS,
                                                  "r1_zero.py:model=deepseek-v2-lite")))
    assert lite.model.preset == "deepseek-v2-lite" and lite.mesh.expert == 8
    assert lite.rollout.engine.kind == "paged" and lite.rollout.max_new_tokens == 31_744


def test_r1_real_rl_stages_are_the_r1_zero_recipe_on_the_test_set():
    stages = _stages("r1.py:model=qwen2.5-math-7b,ckpt=/m,train=/d/t.jsonl,test=/d/m.jsonl,"
                     "general=/d/g.jsonl")
    zero = load_experiment(os.path.join(EXPERIMENTS, "r1_zero.py:model=qwen2.5-math-7b"))
    for name, temperature in (("reasoning_rl", 1.0), ("all_rl", 0.7)):
        rl = stages[name]
        assert rl.grpo.loss.epsilon_low == zero.grpo.loss.epsilon_low == 10.0
        assert rl.grpo.loss.beta == 0.001 and rl.grpo.num_minibatches == 16
        assert rl.rollout.temperature == rl.grpo.temperature == temperature
        assert (rl.data.test, rl.data.max_prompt_tokens, rl.rollout.max_new_tokens,
                rl.eval.max_new_tokens) == ("/d/m.jsonl", 1024, 3072, 3072)
        assert rl.model.preset == "qwen2.5-math-7b"
    assert stages["cold_start"].data.seq_len == stages["sft_mix"].data.seq_len == 4096
    assert stages["rejection"].sampling.max_new_tokens == stages["rejection"].filters.max_tokens \
        == 3072
    assert stages["all_rl"].data.train == "/d/t.jsonl+/d/g.jsonl"


def test_distill_real_budget_is_the_students():
    long = _stages("distill.py:student=llama3.1-8b,student_ckpt=/m,teacher=/t")
    assert long["traces"].sampling.max_new_tokens == long["eval_student"].eval.max_new_tokens \
        == 32_768
    assert long["student_sft"].data.seq_len == 1024 + 32_768
    math = _stages("distill.py:student=qwen2.5-math-7b,student_ckpt=/m,teacher=/t")
    assert math["traces"].sampling.max_new_tokens == 3072
    assert math["student_sft"].data.seq_len == 4096
    assert math["student_sft"].model.preset == "qwen2.5-math-7b"


def test_bad_arguments_name_the_key():
    with pytest.raises(ValueError, match="bad argument 'budjet=3'"):
        load_experiment(os.path.join(EXPERIMENTS, "distill.py:budjet=3"))
    with pytest.raises(ValueError, match="bad argument 'modl=x'"):
        load_experiment(os.path.join(EXPERIMENTS, "r1.py:modl=x"))


# An experiment file is data: it may import the standard library, ml_collections and, from r1jax,
# only r1jax.configdict (parse_variant, load_experiment) — never the library's machinery.
_ALLOWED_R1JAX = "r1jax.configdict"


def _import_violations(path: str) -> list[str]:
    """``file:line: import ...`` for each import outside the stdlib, ml_collections and
    ``r1jax.configdict``."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: an experiment is not part of a package
                modules = ["." * node.level + (node.module or "")]
            elif node.module == "r1jax":  # from r1jax import configdict / pipeline / ...
                modules = [f"r1jax.{alias.name}" for alias in node.names]
            else:
                modules = [node.module]
        else:
            continue
        if not all(map(_allowed, modules)):
            relpath = os.path.relpath(path, os.path.join(EXPERIMENTS, ".."))
            bad.append((node.lineno, f"{relpath}:{node.lineno}: {ast.unparse(node)}"))
    return [line for _, line in sorted(bad)]


def _allowed(module: str) -> bool:
    top = module.split(".")[0]
    if top == "r1jax":
        return module == _ALLOWED_R1JAX or module.startswith(_ALLOWED_R1JAX + ".")
    return top == "ml_collections" or top in sys.stdlib_module_names


EXPERIMENT_FILES = sorted(glob.glob(os.path.join(EXPERIMENTS, "*.py"))
                          + glob.glob(os.path.join(EXPERIMENTS, "sweeps", "*.py")))


def test_experiment_files_import_only_configdict_from_r1jax():
    assert len(EXPERIMENT_FILES) >= 6, EXPERIMENT_FILES
    bad = [v for path in EXPERIMENT_FILES for v in _import_violations(path)]
    assert not bad, ("experiment files may import only the standard library, ml_collections and "
                     "r1jax.configdict:\n" + "\n".join(bad))


def test_import_check_names_the_file_and_the_import(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("import os\nimport ml_collections\nfrom r1jax.configdict import parse_variant\n"
                    "from r1jax import configdict, pipeline\nimport kernels\n"
                    "def get_config(arg=None):\n    from r1jax.rl import trainer\n")
    bad = [v.split(":", 1)[1] for v in _import_violations(str(path))]
    assert bad == ["4: from r1jax import configdict, pipeline", "5: import kernels",
                   "7: from r1jax.rl import trainer"]
