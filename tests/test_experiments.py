"""The multi-stage experiment configs (experiments/r1.py, experiments/distill.py): every variant
loads, every stage validates against its job's run config, and stage outputs feed the next stage;
and every experiment file is data (it imports no r1jax module but ``r1jax.configdict``)."""
import ast
import glob
import importlib
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
            stage_chain._resolve(config.stages[name].to_dict(), "/runs/x"))  # noqa: SLF001
        _validate(stage)
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
