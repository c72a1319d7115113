"""Named prompt sets: what ``data.train`` / ``data.test`` of an experiment point at.

``synthetic:<task>`` (arithmetic, countdown, general) at ``data.difficulty``, or
``synthetic:<task>:d<N>`` at difficulty N; ``humaneval``; or a JSONL path. ``a+b`` mixes sets, each
contributing up to ``num_train`` / ``num_test`` problems (``synthetic:arithmetic:d2+synthetic:
arithmetic:d3`` trains on 2- and 3-step chains alike).
"""
from __future__ import annotations

import dataclasses
import os
import re

from r1jax.data.humaneval import load_humaneval
from r1jax.data.jsonl import JsonlConfig, load_jsonl
from r1jax.data.preferences import general_problems
from r1jax.data.problem import ProblemSet
from r1jax.data.synthetic import SyntheticConfig, problem_set


@dataclasses.dataclass(frozen=True)
class DataSource:
    """Prompts: ``synthetic:<task>`` (arithmetic, countdown), ``humaneval``, or a JSONL path."""

    train: str = "synthetic:arithmetic"
    test: str = "synthetic:arithmetic"
    difficulty: int = 2
    num_train: int = 20_000
    num_test: int = 200
    seed: int = 0
    template: str = "r1_zero"
    max_prompt_tokens: int = 512
    skip_bad_lines: bool = False


def load_problems(source: DataSource, split: str) -> ProblemSet:
    """The train or test prompt set named by ``data.train`` / ``data.test``: ``synthetic:<task>``
    (arithmetic, countdown, general), ``humaneval``, or a JSONL path; ``a+b`` mixes sets, each
    contributing up to ``num_train``/``num_test`` problems."""
    name = source.train if split == "train" else source.test
    parts = [_load_one(source, part, split) for part in name.split("+")]
    if len(parts) == 1:
        return parts[0]
    return ProblemSet(tuple(p for part in parts for p in part), name,
                      tuple(s for part in parts for s in part.skipped))


def _load_one(source: DataSource, name: str, split: str) -> ProblemSet:
    count = source.num_train if split == "train" else source.num_test
    if name == "synthetic:general":
        return general_problems(count, seed=source.seed, split=split)
    if name.startswith("synthetic:"):
        _, task, *level = name.split(":")
        difficulty = source.difficulty
        if level:
            if len(level) > 1 or not re.fullmatch(r"d\d+", level[0]):
                raise ValueError(f"data.{split} {name!r}: expected synthetic:<task> or "
                                 "synthetic:<task>:d<difficulty>, e.g. synthetic:arithmetic:d2")
            difficulty = int(level[0][1:])
        return problem_set(SyntheticConfig(task=task, difficulty=difficulty,
                                           num_examples=count, seed=source.seed, split=split,
                                           unique=split == "test"))
    if name == "humaneval":
        return load_humaneval()
    if not os.path.isfile(name):
        raise FileNotFoundError(f"data.{split} {name!r}: no such file (expected synthetic:<task>, "
                                "humaneval, or a JSONL path)")
    problems = load_jsonl(name, JsonlConfig(skip_bad_lines=source.skip_bad_lines))
    if count < len(problems):
        return ProblemSet(problems.problems[:count], problems.source, problems.skipped)
    return problems
