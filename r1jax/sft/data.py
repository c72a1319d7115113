"""SFT examples: (prompt text, response text) pairs from JSONL files or synthetic sources.

JSONL rows hold ``prompt`` and ``response`` (the prompt exactly as the model sees it), or
``question`` and ``response`` (the question is rendered with the configured template); a bad row
raises a ``DataError`` naming the file, line and field. Synthetic sources for CPU runs:

* ``synthetic-cot:<task>`` — DeepSeek-R1's cold-start data in miniature: problems of the task's
  train split answered with a readable chain of thought (each worked step as a sentence) and the
  answer, in the ``<think> … </think> <answer> … </answer>`` format;
* ``synthetic-general`` — non-reasoning replies to the general instructions of
  ``r1jax.data.preferences`` (the preferred answer, after a one-line thought).

``a+b`` concatenates sources.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

from r1jax.data import DataError, SyntheticConfig, get_template, synthetic
from r1jax.data.preferences import synthetic_pairs

Example = tuple[str, str]


def readable_cot(steps: Sequence[str], answer: str) -> str:
    """A chain of thought a person can follow, then the answer."""
    sentences = [f"First, {steps[0]}."] + [f"Then {s}." for s in steps[1:]]
    return (f"<think> {' '.join(sentences)} So the result is {answer}. </think> "
            f"<answer> {answer} </answer>")


def _jsonl(path: str, template: str) -> list[Example]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SFT data file {path!r} does not exist")
    rendered = get_template(template)
    examples = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise DataError(f"not a JSON line ({e})", path=path, line=number) from None
            if not isinstance(row, dict):
                raise DataError("a line must be a JSON object", path=path, line=number)
            response = row.get("response")
            if not isinstance(response, str) or not response.strip():
                raise DataError("missing or empty text", path=path, line=number, field="response")
            if isinstance(row.get("prompt"), str) and row["prompt"].strip():
                examples.append((row["prompt"], response))
            elif isinstance(row.get("question"), str) and row["question"].strip():
                examples.append((rendered.render(row["question"]), response))
            else:
                raise DataError("needs a 'prompt' or a 'question'", path=path, line=number,
                                field="prompt")
    return examples


def load_examples(spec: str, *, template: str = "r1_zero", count: int = 2000,
                  difficulty: int = 2, seed: int = 0) -> list[Example]:
    """The examples of ``spec`` (see the module docstring); ``count`` sizes synthetic sources."""
    out: list[Example] = []
    rendered = get_template(template)
    for part in spec.split("+"):
        if part.startswith("synthetic-cot:"):
            task = part.split(":", 1)[1]
            problems = synthetic.generate(SyntheticConfig(task=task, difficulty=difficulty,
                                                          num_examples=count, seed=seed))
            out += [(rendered.render(p.question), readable_cot(p.steps, p.answer))
                    for p in problems]
        elif part == "synthetic-general":
            out += [(rendered.render(p.prompt),
                     f"<think> The reply is short. </think> <answer> {p.chosen} </answer>")
                    for p in synthetic_pairs(count, seed=seed, split="train")]
        else:
            out += _jsonl(part, template)
    if not out:
        raise DataError(f"no SFT examples in {spec!r}")
    return out
