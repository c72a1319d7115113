"""What a base model can do before RL, on held-out test problems.

* ``latent_skill``: the problem in a corpus-native prompt ("Problem: … Work:"); correct if the
  first "Result: N" it writes is the answer — the skill RL has to draw on.
* ``template_behaviour``: the R1-Zero template at temperature 1, stopped at ``</answer>``: pass@1
  (the instance's verifier on the extracted ``<answer>``), the rate of well-formed
  ``<think>…</think><answer>…</answer>`` replies (``r1jax.rewards.format_reward``), and the mean
  completion length — what GRPO starts from.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import numpy as np

from r1jax import completions
from r1jax.data import render_prompt
from r1jax.rewards import extract_answer, format_reward

NATIVE_PROMPT = "Problem: {question} Work:"
_RESULT = re.compile(r"Result:\s*(\d+)")


def _generate(params, model_cfg, tokenizer, prompts: Sequence[str], *, rng, num_samples,
              temperature, max_new_tokens, stop_strings, batch_size):
    """Decoded completions ``[len(prompts) × num_samples]`` and their token counts."""
    request = completions.SamplingRequest(max_new_tokens=max_new_tokens, temperature=temperature,
                                          stop_strings=tuple(stop_strings))
    texts, lengths = [], []
    for start in range(0, len(prompts), batch_size):
        # No BOS: pretraining documents have none, and neither do the RL trainer's prompts.
        ids = [tokenizer.encode(p) for p in prompts[start:start + batch_size]]
        done = completions.complete(params, model_cfg, tokenizer, ids, request,
                                    group_size=num_samples, rng=jax.random.fold_in(rng, start))
        texts += done.texts
        lengths += done.lengths_B.tolist()
    return texts, np.asarray(lengths)


def latent_skill(params, model_cfg, tokenizer, problems: Sequence[Any], *, rng: jax.Array,
                 temperature: float = 0.0, num_samples: int = 1, max_new_tokens: int = 64,
                 batch_size: int = 64) -> dict:
    """Accuracy of "Result: N" after a corpus-native prompt (greedy with ``temperature=0``)."""
    prompts = [NATIVE_PROMPT.format(question=p.question) for p in problems]
    texts, _ = _generate(params, model_cfg, tokenizer, prompts, rng=rng, num_samples=num_samples,
                         temperature=temperature, max_new_tokens=max_new_tokens,
                         stop_strings=(), batch_size=batch_size)
    correct = []
    for i, text in enumerate(texts):
        match = _RESULT.search(text)
        correct.append(bool(match) and problems[i // num_samples].verify(match[1]))
    return {"accuracy": float(np.mean(correct)), "samples": texts[:4]}


def template_behaviour(params, model_cfg, tokenizer, problems: Sequence[Any], *, rng: jax.Array,
                       num_samples: int = 4, temperature: float = 1.0, max_new_tokens: int = 96,
                       template: str = "r1_zero", batch_size: int = 32) -> dict:
    """pass@1, format rate, answer-tag rate and mean length under the R1-Zero template."""
    prompts = [render_prompt(p.question, template) for p in problems]
    texts, lengths = _generate(params, model_cfg, tokenizer, prompts, rng=rng,
                               num_samples=num_samples, temperature=temperature,
                               max_new_tokens=max_new_tokens, stop_strings=("</answer>",),
                               batch_size=batch_size)
    correct, formatted, answered = [], [], []
    for i, text in enumerate(texts):
        answer = extract_answer(text)
        answered.append(answer is not None)
        correct.append(answer is not None and problems[i // num_samples].verify(answer))
        formatted.append(format_reward(text) == 1.0)
    correct, formatted = np.asarray(correct), np.asarray(formatted)
    return {
        "pass@1": float(correct.mean()),
        "format_rate": float(formatted.mean()),
        "answer_tag_rate": float(np.mean(answered)),
        "accuracy_when_formatted": float(correct[formatted].mean()) if formatted.any() else 0.0,
        "mean_length": float(lengths.mean()),
        "samples": texts[:6],
    }
