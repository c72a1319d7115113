"""Math accuracy by rules: the completion's final answer against the gold answer via math-verify.

The failure this module is built to prevent: paying 1.0 when the gold answer cannot be parsed (an
early open-r1 bug). A gold answer that parses to no mathematical object gives None — "could not
judge" — which the trainer excludes from advantages and counts; it is never a reward.
"""
from __future__ import annotations

import functools
import threading

from math_verify import parse, verify

from r1jax.rewards.extract import extract_answer

# math-verify's own timeouts use SIGALRM, which only the main thread may set; elsewhere we pass
# None and rely on the reward pool's per-item timeout instead.
PARSE_TIMEOUT_S = 5
VERIFY_TIMEOUT_S = 5
_LATEX_MARKERS = ("$", "\\(", "\\[", "\\boxed", "\\begin{")


def math_accuracy(completion: str, gold: str) -> float | None:
    """1.0 if the completion's final answer equals ``gold`` mathematically, 0.0 if not, None if
    ``gold`` itself cannot be parsed.

    The final answer is the last ``<answer>…</answer>`` (or its ``\\boxed{}``), else the last
    ``\\boxed{}``; a completion without either scores 0.0. Equivalence is math-verify's: ``1/2``,
    ``0.5``, ``\\frac12`` agree; ``1,000`` equals ``1000``; intervals, sets and ``x = 5`` forms work;
    ``\\text{}`` units are dropped.
    """
    gold_parsed = parse_gold(gold)
    if gold_parsed is None:
        return None
    answer = extract_answer(completion)
    if answer is None or not answer.strip():
        return 0.0
    predicted = _parse(_as_latex(answer))
    if not predicted:
        return 0.0
    return 1.0 if verify(list(gold_parsed), predicted, timeout_seconds=_timeout(VERIFY_TIMEOUT_S)) else 0.0


def parse_gold(gold: str) -> tuple | None:
    """The parsed gold answer, or None when it yields no mathematical object (only raw text).

    Cached: a prompt's gold answer is parsed once for all G samples of its group.
    """
    if not isinstance(gold, str) or not gold.strip():
        return None
    return _parse_gold_cached(gold.strip(), threading.current_thread() is threading.main_thread())


@functools.lru_cache(maxsize=4096)
def _parse_gold_cached(gold: str, main_thread: bool) -> tuple | None:
    del main_thread  # part of the cache key only: a timed-out parse must not poison other threads
    parsed = _parse(_as_latex(gold))
    if all(isinstance(p, str) for p in parsed):  # empty, or only the raw-string fallback
        return None
    return tuple(parsed)


def _parse(text: str) -> list:
    return parse(text, parsing_timeout=_timeout(PARSE_TIMEOUT_S))


def _as_latex(text: str) -> str:
    """Wraps bare answers in ``$…$`` so LaTeX like ``\\frac12`` or ``[1,3)`` is read as math.

    Bare text is otherwise read by math-verify's lenient expression extractor, which takes the last
    number it sees: "4 or 5" would then match a gold 5. Inside ``$…$`` it is the set {4, 5}.
    """
    return text if any(m in text for m in _LATEX_MARKERS) else f"${text}$"


def _timeout(seconds: int) -> int | None:
    return seconds if threading.current_thread() is threading.main_thread() else None
