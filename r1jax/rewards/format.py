"""The R1-Zero format reward: reasoning in ``<think>…</think>``, then the answer in
``<answer>…</answer>``, each tag exactly once, in that order, nothing after ``</answer>``.
"""
from __future__ import annotations

import dataclasses

from r1jax.rewards.extract import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


@dataclasses.dataclass(frozen=True)
class FormatCheck:
    """Whether a completion is well formed, and if not, the first rule it breaks (for logs)."""

    ok: bool
    reason: str = ""


def check_format(completion: str, *, think_prefilled: bool = False) -> FormatCheck:
    """Checks the R1 format rules one by one; ``think_prefilled`` means the prompt already ended
    with ``<think>`` so the completion starts inside the reasoning.

    Rules: the text starts (after whitespace) with ``<think>``; each of the four tags occurs exactly
    once; they appear in order; only whitespace lies between ``</think>`` and ``<answer>`` and after
    ``</answer>``; reasoning and answer are both non-empty.
    """
    text = (THINK_OPEN + completion) if think_prefilled else completion
    for tag in _TAGS:
        count = text.count(tag)
        if count != 1:
            return FormatCheck(False, f"{tag} appears {count} times, expected once")
    positions = [text.index(tag) for tag in _TAGS]
    if positions != sorted(positions):
        return FormatCheck(False, "tags out of order")
    if text[:positions[0]].strip():
        return FormatCheck(False, f"text before {THINK_OPEN}")
    if text[positions[1] + len(THINK_CLOSE):positions[2]].strip():
        return FormatCheck(False, f"text between {THINK_CLOSE} and {ANSWER_OPEN}")
    if text[positions[3] + len(ANSWER_CLOSE):].strip():
        return FormatCheck(False, f"text after {ANSWER_CLOSE}")
    if not text[positions[0] + len(THINK_OPEN):positions[1]].strip():
        return FormatCheck(False, "empty reasoning")
    if not text[positions[2] + len(ANSWER_OPEN):positions[3]].strip():
        return FormatCheck(False, "empty answer")
    return FormatCheck(True)


def format_reward(completion: str) -> float:
    """1.0 if ``completion`` follows the R1 format (see ``check_format``), else 0.0."""
    return 1.0 if check_format(completion).ok else 0.0
