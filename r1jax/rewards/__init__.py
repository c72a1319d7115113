"""Rule-based rewards (host side, pure functions on strings; no jax here).

Each reward maps a completion (and what it is judged against) to a float, or to None when it could
not be judged — the trainer excludes those from advantages and counts them:

* ``math_accuracy(completion, gold)`` — the final answer against the gold answer via math-verify;
  None when the gold answer does not parse.
* ``format_reward(completion)`` — ``<think>…</think><answer>…</answer>``, once each, in order.
* ``language_consistency(text, language)`` — share of the CoT's words in the target language.
* ``overlong_penalty(num_tokens, max_tokens=…, cache_tokens=…)`` — DAPO's soft length penalty.
* ``code_accuracy(completion, task)`` — test cases run in the bubblewrap sandbox
  (``r1jax.rewards.sandbox.run_python``), outputs judged outside it.

``score`` combines them with the weights of a ``RewardConfig``; ``score_batch`` runs a batch in a
``RewardPool`` of worker processes with a per-item timeout.
"""
from r1jax.rewards.code import CodeScore, CodeTask, code_accuracy, parse_tests, run_tests
from r1jax.rewards.combine import COMPONENTS, RewardBreakdown, RewardConfig, RewardInput, score
from r1jax.rewards.extract import answer_text, extract_answer, extract_code, last_boxed, think_text
from r1jax.rewards.format import FormatCheck, check_format, format_reward
from r1jax.rewards.language import LANGUAGE_SCRIPTS, language_consistency
from r1jax.rewards.math_verifier import math_accuracy, parse_gold
from r1jax.rewards.overlong import overlong_penalty
from r1jax.rewards.pool import BatchResult, BatchScores, RewardPool, batch_metrics, score_batch
from r1jax.rewards.sandbox import RunResult, SandboxConfig, SandboxLimits, SandboxUnavailable, run_python

__all__ = [
    "BatchResult", "BatchScores", "COMPONENTS", "batch_metrics", "CodeScore", "CodeTask", "FormatCheck",
    "LANGUAGE_SCRIPTS", "RewardBreakdown", "RewardConfig", "RewardInput", "RewardPool", "RunResult",
    "SandboxConfig", "SandboxLimits", "SandboxUnavailable", "answer_text", "check_format",
    "code_accuracy", "extract_answer", "extract_code", "format_reward", "language_consistency",
    "last_boxed", "math_accuracy", "overlong_penalty", "parse_gold", "parse_tests", "run_python",
    "run_tests", "score", "score_batch", "think_text",
]
