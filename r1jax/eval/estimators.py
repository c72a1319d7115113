"""The estimators a reported number rests on: pass@k (Chen et al. 2021) and cons@k (majority vote).

* pass@1 over k samples is the mean correctness of the k samples — what DeepSeek-R1 reports
  (§3 "Evaluation Setup": k = 64 for AIME and GPQA, 16 for MATH-500, 8 for LiveCodeBench).
* pass@k from n >= k samples of which c are correct is the unbiased estimator of Chen et al.
  (2021, eq. 1): ``1 - C(n-c, k) / C(n, k)``, computed as the product
  ``1 - prod_{i=n-c+1}^{n} (i - k) / i`` so that no binomial coefficient is ever formed.
* cons@k is the correctness of the majority answer of k samples. Answers are grouped into classes
  of mathematically equal answers by math-verify (``1/2``, ``0.5`` and ``\\frac{1}{2}`` are one
  class), the largest class wins, and a tie goes to the class whose first member came first in
  sample order. Host only: this module never imports jax (reward-pool workers import it).
"""
from __future__ import annotations

import dataclasses
import math
import threading
from typing import Sequence

from math_verify import parse, verify

# Mirrors the math reward (``r1jax.rewards.math_verifier``): bare answers are read inside ``$…$``.
_LATEX_MARKERS = ("$", "\\(", "\\[", "\\boxed", "\\begin{")
PARSE_TIMEOUT_S = 5
VERIFY_TIMEOUT_S = 5


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct: ``1 - C(n-c, k) / C(n, k)``.

    Exact at the edges: 0.0 when ``c == 0`` and 1.0 when ``n - c < k`` (every k-subset holds a
    correct sample). Raises ValueError unless ``0 <= c <= n`` and ``1 <= k <= n``.
    """
    n, c, k = _as_int(n, "n"), _as_int(c, "c"), _as_int(k, "k")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n, got n={n}, k={k}")
    if c == 0:
        return 0.0
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i); each factor in (0, 1), no overflow.
    return 1.0 - math.prod((i - k) / i for i in range(n - c + 1, n + 1))


def _as_int(value, name: str) -> int:
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(f"pass_at_k: {name} must be a whole number, got {value!r}")
    return int(value)


def mean_pass_at_k(num_samples: Sequence[int], num_correct: Sequence[int], k: int) -> float:
    """pass@k averaged over problems (``num_samples[i]`` samples of problem i, ``num_correct[i]``
    of them correct); NaN for no problems."""
    if len(num_samples) != len(num_correct):
        raise ValueError(f"{len(num_samples)} sample counts but {len(num_correct)} correct counts")
    if not num_samples:
        return float("nan")
    return sum(pass_at_k(n, c, k) for n, c in zip(num_samples, num_correct)) / len(num_samples)


@dataclasses.dataclass(frozen=True)
class Vote:
    """The outcome of a majority vote.

    ``answer`` is the winning class's first member (stripped), ``index`` its position in the input
    (None when no input had an answer), ``count`` the winning class's size, ``num_classes`` how
    many distinct classes the answers formed, ``class_of`` the class of every input (-1: no answer).
    """

    answer: str
    index: int | None
    count: int
    num_classes: int
    class_of: tuple[int, ...]


def vote(answers: Sequence[str | None]) -> Vote:
    """Groups answers into classes of mathematical equivalence and picks the largest class.

    Empty, whitespace-only and None answers (a sample that committed to no answer) take no part.
    Each answer joins the first earlier class whose representative (its first member) it equals:
    the same text after stripping, else ``verify(representative, answer)`` by math-verify; an
    answer math-verify cannot parse matches by text only. Ties in class size go to the class whose
    first member comes first. Deterministic for a given order of answers.
    """
    representatives: list[tuple[str, list]] = []  # (stripped text, parsed) of each class
    counts: list[int] = []
    firsts: list[int] = []
    class_of: list[int] = []
    for index, raw in enumerate(answers):
        text = raw.strip() if isinstance(raw, str) else ""
        if not text:
            class_of.append(-1)
            continue
        parsed = None  # parsed lazily: an exact text match needs no parse
        found = -1
        for cls, (rep_text, rep_parsed) in enumerate(representatives):
            if text == rep_text:
                found = cls
                break
            if parsed is None:
                parsed = _parse(text)
            if parsed and rep_parsed and _equal(rep_parsed, parsed):
                found = cls
                break
        if found < 0:
            found = len(representatives)
            representatives.append((text, parsed if parsed is not None else _parse(text)))
            counts.append(0)
            firsts.append(index)
        counts[found] += 1
        class_of.append(found)
    if not representatives:
        return Vote("", None, 0, 0, tuple(class_of))
    # max() returns the first maximal element: classes are numbered by first appearance.
    winner = max(range(len(counts)), key=lambda cls: counts[cls])
    return Vote(representatives[winner][0], firsts[winner], counts[winner], len(counts),
                tuple(class_of))


def majority_vote(answers: list[str]) -> str:
    """The majority answer of ``answers`` under mathematical equivalence (see ``vote``).

    Returns the first-seen member of the largest class, stripped (``["0.5", "1/2", "3"]`` gives
    ``"0.5"``); ties go to the class seen first; None/empty answers are ignored, and ``""`` is
    returned when no answer is left.
    """
    return vote(answers).answer


def answers_equal(a: str | None, b: str | None) -> bool:
    """Whether two final answers are the same mathematically (or, when unparseable, textually)."""
    a = a.strip() if isinstance(a, str) else ""
    b = b.strip() if isinstance(b, str) else ""
    if not a or not b:
        return False
    if a == b:
        return True
    pa, pb = _parse(a), _parse(b)
    return bool(pa and pb and _equal(pa, pb))


def _parse(text: str) -> list:
    math_text = text if any(m in text for m in _LATEX_MARKERS) else f"${text}$"
    try:
        return list(parse(math_text, parsing_timeout=_timeout(PARSE_TIMEOUT_S)))
    except Exception:  # noqa: BLE001 — an unparseable answer is matched by its text only
        return []


def _equal(gold: list, target: list) -> bool:
    try:
        return bool(verify(gold, target, timeout_seconds=_timeout(VERIFY_TIMEOUT_S)))
    except Exception:  # noqa: BLE001 — math-verify failing on an odd pair means "not shown equal"
        return False


def _timeout(seconds: int) -> int | None:
    # math-verify's timeouts use SIGALRM, which only the main thread may set.
    return seconds if threading.current_thread() is threading.main_thread() else None
