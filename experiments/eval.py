r"""Evaluate a checkpoint on a benchmark: pass@1 over k samples, unbiased pass@k, cons@k.

Command (the checkpoint is a Hugging Face-format directory — config.json, *.safetensors and the
tokenizer files — which is what r1jax training runs export):

    python launch/run.py --workdir=/tmp/r1jax_eval \
        --config=experiments/eval.py:ckpt=/ckpts/r1_zero_qwen7b,bench=aime,data=/data/aime24.jsonl

Arguments (``key=value``, comma-separated): ``ckpt`` (required), ``bench`` (a name in
``r1jax.eval.BENCHMARKS`` — aime, math500, gpqa, gsm8k, livecodebench, humaneval, jsonl,
arithmetic, countdown — or a ``.jsonl`` path), ``data`` (the JSONL of a file-backed benchmark),
``format`` (which benchmark's reader/defaults apply to a ``.jsonl`` given as ``bench``), ``k``,
``max_new_tokens``, ``temperature``, ``top_p``, ``top_k``, ``batch_size``, ``num_problems``,
``pass_k`` (``1+8+64``), ``template``, ``difficulty``, ``seed``, ``sample_seed``, ``dtype``,
``mesh`` (``fsdp``, ``data``, ``tensor`` = that axis over all devices, or ``none``), ``workers``
(reward processes), ``out`` (output directory). Unset sampling settings take the benchmark's
defaults (DeepSeek-R1: temperature 0.6, top-p 0.95, 32,768 new tokens; k = 64 for AIME and GPQA,
16 for MATH-500, 8 for LiveCodeBench, HumanEval and GSM8K; cons@64 on AIME).

Without ``bench`` this is the tiny CPU run: 16 countdown test problems (difficulty 2), k = 4, up to
256 new tokens, on the exported ``tiny``-preset model of an r1jax CPU run — 23 s measured on two
shared CPU cores (compile included). A random-weight model scores 0 % pass@1 (and 0 % format); a
model trained on countdown should score clearly above that.

Real scale: AIME 2024 (30 problems × 64 samples × up to 32,768 tokens) with a 7B model on a TPU
v4-8 or one H100: expect hours (not yet measured); lower ``batch_size`` if the KV cache
(batch_size × k rows × (prompt + max_new_tokens) positions) does not fit. DeepSeek-R1-Zero reports
71.0 % pass@1 and 86.7 % cons@64 on AIME 2024 (671B model). Output: ``<workdir>/eval/<label>/``
(e.g. ``aime``, ``countdown-d2``) with ``samples.jsonl`` (every sample, extracted answer and
verdict), ``summary.json`` and ``results.md``; rerun the same command to resume a killed run.
"""
import ml_collections
from ml_collections import config_dict

from r1jax.configdict import parse_variant

# arg key -> (config field, parser)
_ARGS = {
    "ckpt": ("ckpt", str), "bench": ("bench", str), "data": ("data", str), "format": ("format", str),
    "tokenizer": ("tokenizer", str), "k": ("num_samples", int), "max_new_tokens": ("max_new_tokens", int),
    "temperature": ("temperature", float), "top_p": ("top_p", float), "top_k": ("top_k", int),
    "batch_size": ("batch_size", int), "num_problems": ("num_problems", int), "template": ("template", str),
    "difficulty": ("difficulty", int), "seed": ("seed", int), "sample_seed": ("sample_seed", int),
    "dtype": ("dtype", str), "workers": ("reward_workers", int), "out": ("output_dir", str),
    "pass_k": ("pass_k", lambda v: tuple(int(k) for k in v.split("+"))),
    "mesh": ("mesh", lambda v: None if v == "none" else {v: -1}),
}
TINY = dict(bench="countdown", num_samples=4, max_new_tokens=256, num_problems=16, batch_size=16)


def parse_arg(arg):
    """``"ckpt=DIR,bench=aime,k=8"`` as ``{config field: value}``; errors name the bad key."""
    values = parse_variant(arg, {key: parse for key, (_, parse) in _ARGS.items()},
                           "experiments/eval.py")
    return {_ARGS[key][0]: value for key, value in values.items()}


def get_config(arg=None):
    """The evaluation config; ``arg`` is the ``key=value,...`` string after the file name."""
    values = parse_arg(arg)
    if "bench" not in values:
        values = {**TINY, **values}
    config = ml_collections.ConfigDict()
    config.job = "eval"
    config.eval = ml_collections.ConfigDict(dict(
        ckpt="",
        bench="",
        data="",
        format="auto",
        tokenizer="",
        num_problems=0,
        difficulty=2,
        seed=0,
        sample_seed=0,
        template="r1_zero",
        num_samples=config_dict.placeholder(int),
        temperature=config_dict.placeholder(float),
        top_p=config_dict.placeholder(float),
        top_k=config_dict.placeholder(int),
        max_new_tokens=config_dict.placeholder(int),
        batch_size=config_dict.placeholder(int),
        pass_k=config_dict.placeholder(tuple),
        stop_strings=config_dict.placeholder(tuple),
        cons=config_dict.placeholder(bool),
        add_bos=False,
        dtype=config_dict.placeholder(str),
        mesh={"fsdp": -1},
        reward_workers=4,
        reward_timeout_s=120.0,
        code_timeout_s=10.0,
        output_dir="",
        progress=True,
    ))
    for field, value in values.items():
        config.eval[field] = value
    return config
