"""Pulling the parts a reward judges out of a completion: the CoT, the answer, a boxed value, code.

The R1 format puts the reasoning in ``<think>…</think>`` and the answer in ``<answer>…</answer>``;
instruct models often answer with ``\\boxed{…}`` instead. Every function here is total: it returns
None (or an empty string) rather than raising on odd input, because completions are arbitrary text.
"""
from __future__ import annotations

import re

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

_ANSWER_RE = re.compile(re.escape(ANSWER_OPEN) + r"(.*?)" + re.escape(ANSWER_CLOSE), re.DOTALL)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)


def answer_text(completion: str) -> str | None:
    """The content of the last ``<answer>…</answer>`` pair, stripped; None if there is none."""
    matches = _ANSWER_RE.findall(completion)
    return matches[-1].strip() if matches else None


def think_text(completion: str) -> str:
    """The chain of thought: inside ``<think>…</think>`` (to the end if unclosed), else before
    ``<answer>`` (the prompt may have prefilled ``<think>``), else the whole completion."""
    start = completion.find(THINK_OPEN)
    if start >= 0:
        body = completion[start + len(THINK_OPEN):]
        end = body.find(THINK_CLOSE)
        return body if end < 0 else body[:end]
    end = completion.find(THINK_CLOSE)
    if end >= 0:
        return completion[:end]
    end = completion.find(ANSWER_OPEN)
    return completion if end < 0 else completion[:end]


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{…}`` (or ``\\fbox{…}``) with balanced braces, else None."""
    starts = [m.end() for m in _BOXED_RE.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
    return None


def extract_answer(completion: str) -> str | None:
    """The final answer a completion commits to: the last ``<answer>`` block (its ``\\boxed{}``
    if it holds one), else the last ``\\boxed{}`` anywhere; None if it commits to nothing."""
    answer = answer_text(completion)
    if answer is not None:
        boxed = last_boxed(answer)
        return boxed if boxed is not None else answer
    return last_boxed(completion)


def extract_code(completion: str) -> str | None:
    """The program a completion proposes: the last fenced block inside ``<answer>`` (or after
    ``</think>`` / anywhere when there is no answer block), or the bare answer text; else None.

    A fenced block tagged with a language other than Python is skipped.
    """
    answer = answer_text(completion)
    region = answer
    if region is None:
        close = completion.rfind(THINK_CLOSE)
        region = completion[close + len(THINK_CLOSE):] if close >= 0 else completion
    blocks = [body for lang, body in _FENCE_RE.findall(region)
              if lang.lower() in ("", "python", "py", "python3")]
    if blocks:
        return blocks[-1]
    if answer is not None and answer.strip():
        return answer
    return None
