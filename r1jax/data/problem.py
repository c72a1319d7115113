"""The one record every prompt source produces, and the set that holds them.

A ``Problem`` is judged by exactly the means it carries: a gold ``answer`` (math, checked by
math-verify), ``tests`` (code, run in the sandbox) or a ``verifier`` (a synthetic task's own rule).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping


class DataError(ValueError):
    """Bad input data, located: ``path``, 1-based ``line`` and ``field`` where known."""

    def __init__(self, message: str, *, path: str = "", line: int | None = None, field: str | None = None):
        self.path, self.line, self.field = path, line, field
        where = path + (f":{line}" if line is not None else "")
        where += (f" field {field!r}" if field else "")
        super().__init__(f"{where}: {message}" if where else message)


@dataclasses.dataclass(frozen=True)
class Problem:
    """One prompt and the means to judge a completion of it.

    ``tests`` are code test cases in the JSON form ``r1jax.rewards.code.parse_tests`` reads;
    ``code_prefix`` is code the completion continues (HumanEval's prompt) and ``test_setup`` code
    run before the tests. ``verifier(answer_text) -> bool`` judges the extracted final answer.
    ``general`` marks a prompt with no rule to judge it (writing, chat): a preference reward model
    scores its completions (DeepSeek-R1's final RL stage).
    """

    id: str
    question: str
    answer: str = ""
    tests: tuple[Mapping[str, Any], ...] = ()
    entry_point: str | None = None
    code_prefix: str = ""
    test_setup: str = ""
    language: str | None = None
    source: str = ""
    verifier: Callable[[str], bool] | None = None
    general: bool = False

    def __post_init__(self):
        if not self.question.strip():
            raise DataError("empty question", path=self.source, field="question")
        if not (self.answer.strip() or self.tests or self.verifier is not None or self.general):
            raise DataError(f"problem {self.id!r} has no answer, tests or verifier", path=self.source)

    @property
    def kind(self) -> str:
        """How a completion is judged: ``"general"`` (a reward model), ``"verifier"``, ``"code"``
        or ``"math"``."""
        if self.general:
            return "general"
        if self.verifier is not None:
            return "verifier"
        return "code" if self.tests else "math"


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A line a tolerant load left out, and why."""

    line: int
    reason: str


@dataclasses.dataclass(frozen=True)
class ProblemSet:
    """Problems from one source, plus the lines skipped on the way (when skipping was allowed)."""

    problems: tuple[Problem, ...]
    source: str = ""
    skipped: tuple[Skipped, ...] = ()

    def __len__(self) -> int:
        return len(self.problems)

    def __getitem__(self, index: int) -> Problem:
        return self.problems[index]

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.problems)
