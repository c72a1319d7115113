"""The paper's recipes (the real variants of experiments/r1_zero.py, r1.py and distill.py) on
real-format checkpoints and data, on a CPU: start-up validation, and every variant run end to end.

The fixtures write what a user downloads: a tiny Qwen2 and a tiny Llama saved by ``transformers``
(safetensors, ``config.json``) with a byte-level BPE ``tokenizer.json`` trained by ``tokenizers``
and its ``tokenizer_config.json``, and JSONL files in the usual shapes (MATH with ``\\boxed{}``
solutions, GSM8K with ``####``, ``prompt`` + ``answer``, MATH-500). Each variant's recipe runs as
written but shrunk (steps, prompts, tokens, evaluation problems, reward workers) and with
``model.preset`` cleared: the preset names a 7B-class architecture the tiny checkpoint is not
(the variants keep it to size runs with ``launch/aot.py`` and to check the checkpoint). The
exports are then loaded by ``transformers`` and compared with r1jax's logits.
"""
import importlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from r1jax import hf, models, pipeline, run_checks
from r1jax.configdict import from_config, load_experiment
from r1jax.data import DataError, load_jsonl
from r1jax.rl.run_config import RunConfig as GRPORunConfig
from r1jax.sharding import Sharding, make_mesh
from r1jax.tokenizer import load_tokenizer

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "experiments")
QWEN_VARIANTS = ("qwen2.5-math-1.5b", "qwen2.5-math-7b", "qwen2.5-1.5b", "qwen2.5-7b",
                 "qwen2.5-32b")
LLAMA_VARIANTS = ("llama3.1-8b", "llama3.3-70b")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


# --- real-format inputs -------------------------------------------------------------------------

def _math_lines(n, offset=0):
    """MATH (problem + solution with \\boxed{}), GSM8K (question + answer with ####), and prompt +
    answer lines, in turn."""
    lines = []
    for i in range(offset, offset + n):
        a, b = i % 7 + 2, i % 5 + 3
        kind = i % 3
        if kind == 0:
            lines.append({"problem": f"What is ${a}+{b}$?", "level": "Level 1", "type": "Algebra",
                          "solution": f"Adding, ${a}+{b}=\\boxed{{{a + b}}}$."})
        elif kind == 1:
            lines.append({"question": f"Tom has {a} apples and buys {b} more. How many now?",
                          "answer": f"{a} + {b} = <<{a}+{b}={a + b}>>{a + b}\n#### {a + b}"})
        else:
            lines.append({"prompt": f"Compute {a} times {b}.", "answer": str(a * b)})
    return lines


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Checkpoints (``qwen``, ``llama``) and data files (``train``, ``test``, ``cold_start``,
    ``general``, ``preferences``) in the formats a real run reads."""
    from tokenizers import (Regex, Tokenizer, decoders, models as tok_models, normalizers,
                            pre_tokenizers, trainers)

    root = tmp_path_factory.mktemp("real")
    train = _math_lines(24)
    test = [{"problem": f"What is ${i}+{i + 1}$?", "solution": "...", "answer": str(2 * i + 1),
             "subject": "Algebra", "level": 1, "unique_id": f"test/algebra/{i}.json"}
            for i in range(8)]
    general = [{"question": f"Name a word about the {w}.", "general": True,
                "response": f"<think> A short reply. </think> <answer> {w} </answer>"}
               for w in ("sea", "sky", "sun", "moon", "rain", "snow", "wind", "fire")]
    cold_start = [{"question": p.get("problem") or p.get("question") or p["prompt"],
                   "response": "<think> First, add. </think> <answer> 5 </answer>"} for p in train]
    preferences = [{"prompt": f"Say the word {w}.", "chosen": w, "rejected": w[::-1] + "x"}
                   for w in ("apple", "river", "stone", "cloud", "green", "light", "table",
                             "music")] * 3
    files = dict(train=_write_jsonl(root / "train.jsonl", train),
                 test=_write_jsonl(root / "math500.jsonl", test),
                 general=_write_jsonl(root / "general.jsonl", general),
                 cold_start=_write_jsonl(root / "cold_start.jsonl", cold_start),
                 preferences=_write_jsonl(root / "preferences.jsonl", preferences))

    from r1jax.data import R1_ZERO

    corpus = [R1_ZERO] * 4 + [json.dumps(r) for r in train + test + general + preferences] + \
        ["<think> reasoning </think> <answer> 12 </answer> \\boxed{3}"] * 4
    # Qwen2's byte-level BPE layout (transformers rebuilds a qwen2 checkpoint's tokenizer with it).
    tok = Tokenizer(tok_models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=420, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"]))
    vocab = -(-tok.get_vocab_size() // 8) * 8
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None,
                        "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                        "chat_template": CHATML, "model_max_length": 4096}
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6,
                  eos_token_id=tok.token_to_id("<|endoftext|>"), bos_token_id=None)
    configs = {
        # Qwen2.5-Math's shape of config: 4,096 positions, tied embeddings, q/k/v biases.
        "qwen": transformers.Qwen2Config(**common, max_position_embeddings=4096,
                                         rope_theta=10_000.0, tie_word_embeddings=True,
                                         use_sliding_window=False),
        # Llama 3.1's: rope scaling to 8 × its original context, untied head.
        "llama": transformers.LlamaConfig(**common, max_position_embeddings=8192,
                                          rope_theta=500_000.0, tie_word_embeddings=False,
                                          rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                        "low_freq_factor": 1.0,
                                                        "high_freq_factor": 4.0,
                                                        "original_max_position_embeddings": 1024}),
    }
    for name, config in configs.items():
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config)
        model.save_pretrained(root / name)
        tok.save(str(root / name / "tokenizer.json"))
        (root / name / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
        files[name] = str(root / name)
    files["root"] = str(root)
    return files


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """A persistent compilation cache for this module's runs: the variants of a recipe compile
    the same programs (same tiny checkpoint, same shrunk shapes), so only the first compiles."""
    from jax.experimental.compilation_cache import compilation_cache as cc

    saved = {k: getattr(jax.config, k) for k in (
        "jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes")}
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    cc.reset_cache()
    yield
    for key, value in saved.items():
        jax.config.update(key, value)
    cc.reset_cache()


# --- shrinking a recipe -------------------------------------------------------------------------

def _set(config: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for key in path:
        config = config[key]
    config[last] = value


# What a GRPO stage shrinks to: 2 steps of 2 prompts × the recipe's 16 samples in 4 minibatches
# (8 rows each: one per device), 8 new tokens, 8 held-out problems, rewards judged in-process.
GRPO_SHRINK = {"steps": 2, "prompts_per_step": 2, "grpo.num_minibatches": 4,
               "rollout.max_new_tokens": 8, "eval.max_new_tokens": 8, "eval.num_problems": 8,
               "data.num_test": 8, "rewards.num_workers": 0, "logging.tensorboard": False,
               "logging.progress_bar": False, "checkpoint.every": 1, "model.preset": None}
# SFT: rows of 256 tokens, 8 per step (one per device), one epoch.
SFT_SHRINK = {"data.seq_len": 256, "batch_rows": 8, "sft.num_microbatches": 1, "epochs": 1,
              "progress_bar": False, "model.preset": None}
# Traces: 8 prompts × 2 samples of 8 tokens, each distinct sample kept (a random model is never
# right), 4 prompts per call.
TRACES_SHRINK = {"data.num_train": 8, "sampling.num_samples": 2, "sampling.batch_prompts": 4,
                 "sampling.max_new_tokens": 8, "filters.require_correct": False,
                 "filters.require_format": False, "filters.min_language": 0.0,
                 "reward_workers": 0, "progress_bar": False}


def _shrunk_grpo(config: dict) -> dict:
    for key, value in GRPO_SHRINK.items():
        _set(config, key, value)
    return config


def _r1_zero(model, real, **extra):
    arg = f"model={model},ckpt={real[_family(model)]},train={real['train']},test={real['test']}"
    config = load_experiment(os.path.join(EXPERIMENTS, "r1_zero.py") + ":" + arg).to_dict()
    for key, value in extra.items():
        _set(config, key, value)
    return config


def _sharding():
    return Sharding(make_mesh({"fsdp": -1}))  # the recipes' mesh: FSDP over all 8 devices


def _family(model):
    return "llama" if model.startswith("llama") else "qwen"


# --- checks on the export -----------------------------------------------------------------------

def _check_export(export, source):
    """The export loads in transformers, its tokenizer encodes as the source's, and its logits
    equal r1jax's (float32)."""
    theirs = transformers.AutoTokenizer.from_pretrained(export)
    ours = load_tokenizer(export)
    text = "What is $2+3$? <think> add </think> <answer> 5 </answer>"
    assert theirs.encode(text, add_special_tokens=False) == ours.encode(text)
    assert ours.encode(text) == load_tokenizer(source).encode(text)
    tokens = np.array([ours.encode(text)[:12], ours.encode("Compute 6 times 7. The answer")[:12]])
    if tokens.shape != (2, 12):
        tokens = np.stack([np.resize(row, 12) for row in tokens])
    mask = np.ones_like(tokens)
    mask[1, :3] = 0
    model = transformers.AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32).eval()
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    with torch.no_grad():
        expected = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                         position_ids=torch.tensor(positions)).logits.numpy()
    cfg, params = hf.load_pretrained(export, dtype="float32")
    got = np.asarray(models.logits(cfg, params, jnp.asarray(tokens), jnp.asarray(mask)))
    assert float((np.abs(got - expected) * mask[..., None]).max()) <= 1e-4


def _check_grpo_run(workdir, summary):
    assert summary["steps"] == 2 and "pass@1" in summary["final"]
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["loss"]) and "reward" in r and "accuracy" in r for r in rows)
    evals = [json.loads(line) for line in open(os.path.join(workdir, "eval.jsonl"))]
    assert [e["step"] for e in evals] == [0, 2]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert os.path.isfile(os.path.join(workdir, "export", name)), name


# --- the runs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("model", QWEN_VARIANTS + LLAMA_VARIANTS)
def test_r1_zero_real_variant_runs_and_exports_what_transformers_loads(model, real, compile_cache,
                                                                       tmp_path):
    config = _r1_zero(model, real)
    assert config["rollout"]["temperature"] == 1.0 and config["grpo"]["num_minibatches"] == 16
    _shrunk_grpo(config)
    workdir = str(tmp_path / model)
    summary = pipeline.run(config, workdir)
    _check_grpo_run(workdir, summary)
    _check_export(os.path.join(workdir, "export"), real[_family(model)])


def _stage_chain(experiment, arg, shrink, check=lambda stages: None):
    """The experiment's stage chain; ``check`` sees the stages as written, then each is shrunk."""
    config = load_experiment(os.path.join(EXPERIMENTS, experiment) + ":" + arg).to_dict()
    check(config["stages"])
    for name, stage in config["stages"].items():
        for key, value in shrink(name, stage).items():
            _set(stage, key, value)
    return config


def test_r1_real_variant_runs_all_six_stages(real, compile_cache, tmp_path):
    arg = (f"model=qwen2.5-math-7b,ckpt={real['qwen']},cold_start={real['cold_start']},"
           f"train={real['train']},test={real['test']},general={real['general']},"
           f"preferences={real['preferences']}")

    def shrink(name, stage):
        if stage["job"] == "grpo":
            return GRPO_SHRINK
        if stage["job"] == "sft":
            return SFT_SHRINK
        if stage["job"] == "traces":
            return TRACES_SHRINK
        return {"batch_pairs": 4, "data.num_train": 24, "data.num_test": 8, "eval_every": 0,
                "progress_bar": False, "model.preset": None}

    def as_written(stages):  # Qwen2.5-Math's budget: 1,024 + 3,072 positions of its 4,096
        assert stages["reasoning_rl"]["rollout"]["max_new_tokens"] == 3072
        assert stages["cold_start"]["data"]["seq_len"] == 4096

    config = _stage_chain("r1.py", arg, shrink, as_written)
    workdir = tmp_path / "r1"
    summary = pipeline.run(config, str(workdir))
    assert list(summary["stages"]) == ["cold_start", "reasoning_rl", "rejection", "sft_mix",
                                       "reward_model", "all_rl"]
    for stage in ("reasoning_rl", "all_rl"):
        _check_grpo_run(str(workdir / stage), summary["stages"][stage])
    kept = (workdir / "rejection" / "out" / "data.jsonl").read_text().splitlines()
    assert 8 <= len(kept) <= 16  # 8 prompts × 2 samples, only repeats of a prompt dropped
    assert summary["stages"]["sft_mix"]["examples"] == len(kept) + 8  # + the general replies
    rows = [json.loads(line) for line in open(workdir / "all_rl" / "metrics.jsonl")]
    assert all("preference" in r for r in rows)  # general prompts scored by the reward model
    _check_export(str(workdir / "all_rl" / "export"), real["qwen"])


def test_distill_real_variant_runs_traces_sft_and_eval(real, compile_cache, tmp_path):
    """The documented student (Qwen2.5-Math-1.5B's recipe) distilled from a Llama-format teacher."""
    arg = (f"student=qwen2.5-math-1.5b,student_ckpt={real['qwen']},teacher={real['llama']},"
           f"train={real['train']},test={real['test']}")

    def shrink(name, stage):
        if stage["job"] == "sft":
            return SFT_SHRINK
        if stage["job"] == "traces":
            return TRACES_SHRINK
        return {"eval.num_problems": 8, "eval.num_samples": 4, "eval.max_new_tokens": 8,
                "eval.batch_size": 2, "eval.reward_workers": 0, "eval.progress": False}

    def as_written(stages):  # Qwen2.5-Math's budget: 1,024 + 3,072 positions of its 4,096
        assert stages["student_sft"]["data"]["seq_len"] == 4096
        assert stages["traces"]["sampling"]["max_new_tokens"] == 3072
        assert stages["eval_student"]["eval"]["max_new_tokens"] == 3072

    config = _stage_chain("distill.py", arg, shrink, as_written)
    workdir = tmp_path / "distill"
    summary = pipeline.run(config, str(workdir))
    kept = (workdir / "traces" / "out" / "data.jsonl").read_text().splitlines()
    assert summary["stages"]["student_sft"]["examples"] == len(kept) >= 8
    assert "pass@1" in summary["stages"]["eval_student"]
    _check_export(str(workdir / "student_sft" / "export"), real["qwen"])


def test_a_preset_the_checkpoint_is_not_is_refused_before_its_weights(real, tmp_path):
    from r1jax.hf.config_io import save_config
    from r1jax.policy import ModelSource, load_policy

    with pytest.raises(ValueError) as info:
        load_policy(ModelSource(checkpoint=real["qwen"], preset="qwen2.5-7b"), _sharding())
    message = str(info.value)
    assert message.startswith(f"model.checkpoint {real['qwen']} is not model.preset 'qwen2.5-7b': "
                              "its config.json has vocab_size")
    assert "hidden_size 32 (preset: 3584)" in message
    assert "max_position_embeddings 4096 (preset: 131072)" in message
    assert "no preset matches it: clear model.preset (None)" in message
    # Qwen2.5-Math-7B named qwen2.5-7b: same shapes, other positions and RoPE. Only config.json is
    # there: the check runs before any weight is read.
    only_config = tmp_path / "math7b"
    only_config.mkdir()
    save_config(str(only_config), models.get_config("qwen2.5-math-7b"))
    with pytest.raises(ValueError) as info:
        load_policy(ModelSource(checkpoint=str(only_config), preset="qwen2.5-7b"), _sharding())
    assert ("its config.json has max_position_embeddings 4096 (preset: 131072); rope_theta "
            "10000.0 (preset: 1000000.0); it is the 'qwen2.5-math-7b' architecture: set "
            "model.preset=qwen2.5-math-7b (model=qwen2.5-math-7b in an experiment), or point "
            "model.checkpoint at a qwen2.5-7b checkpoint") in str(info.value)


def test_runs_stop_at_start_up_naming_the_field(real, tmp_path):
    """The jobs' hooks: a budget the checkpoint cannot hold stops the run before any compile."""
    config = _shrunk_grpo(_r1_zero("qwen2.5-math-7b", real))
    config["rollout"]["max_new_tokens"] = 3073
    with pytest.raises(run_checks.RunCheckError, match="lower rollout.max_new_tokens to 3072"):
        pipeline.run(config, str(tmp_path / "grpo"))
    assert not os.path.exists(tmp_path / "grpo" / "checkpoints")
    sft = dict(job="sft", model=dict(checkpoint=real["qwen"]),
               data=dict(train=real["cold_start"], seq_len=4097), batch_rows=8)
    with pytest.raises(run_checks.RunCheckError, match="lower data.seq_len to 4096"):
        pipeline.run(sft, str(tmp_path / "sft"))
    rm = dict(job="reward_model", model=dict(checkpoint=real["qwen"]), batch_pairs=3,
              data=dict(train=real["preferences"], test=real["preferences"]))
    with pytest.raises(run_checks.RunCheckError, match="make batch_pairs a multiple of 4"):
        pipeline.run(rm, str(tmp_path / "rm"))


def test_bad_lines_in_the_real_formats_name_file_line_and_field(tmp_path):
    path = tmp_path / "math.jsonl"
    _write_jsonl(path, _math_lines(3) + [{"problem": "No box.", "solution": "It is 4."}])
    with pytest.raises(DataError) as info:
        load_jsonl(path)
    assert str(info.value).startswith(f"{path}:4 field 'solution': has no non-empty \\boxed{{...}}")
    assert [p.answer for p in load_jsonl(_write_jsonl(tmp_path / "ok.jsonl", _math_lines(3)))] \
        == ["5", "7", "20"]


def test_check_run_dispatches_on_the_job_and_reads_config_json_alone(real):
    cfg = from_config(GRPORunConfig, _r1_zero("qwen2.5-math-7b", real,
                                              **{"rollout.max_new_tokens": 4000}))
    with pytest.raises(run_checks.RunCheckError, match="rollout.max_new_tokens to 3072"):
        run_checks.check_run(cfg, hf.load_config(real["qwen"]), _sharding())
    run_checks.check_run(from_config(importlib.import_module("r1jax.eval.run_config").RunConfig,
                                     {"job": "eval", "eval": {"ckpt": "/c", "bench": "gsm8k"}}),
                         hf.load_config(real["qwen"]), _sharding())  # no check for this job
