"""One sample's rewards: each component computed, then a weighted sum chosen in the config.

Components (``COMPONENTS``): ``accuracy`` (a task verifier, the code sandbox or math-verify, by what
the sample carries), ``preference`` (a reward model's score, for general prompts), ``format``,
``language`` (consistency of the CoT) and ``overlong`` (DAPO's length shaping). Per prompt type:
rule rewards judge reasoning prompts and the reward model judges general ones; each counts 0 on
the other type. A component that cannot judge (None) or raises makes the total None when its
weight is non-zero: the trainer drops such samples from the advantages and counts them.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from r1jax.rewards import code, sandbox
from r1jax.rewards.extract import extract_answer, think_text
from r1jax.rewards.format import check_format
from r1jax.rewards.language import language_consistency
from r1jax.rewards.math_verifier import math_accuracy
from r1jax.rewards.overlong import overlong_penalty

COMPONENTS = ("accuracy", "preference", "format", "language", "overlong")


@dataclasses.dataclass(frozen=True)
class RewardInput:
    """One completion and what judging it needs (a host-side, picklable view of a Problem).

    Exactly one judge is used for accuracy: ``verifier`` if set, else ``tests`` (code, run in the
    sandbox), else ``answer`` (math). ``num_tokens`` is the completion's length in tokens.
    """

    completion: str
    answer: str = ""
    tests: tuple[Mapping[str, Any], ...] = ()
    entry_point: str | None = None
    code_prefix: str = ""
    test_setup: str = ""
    language: str | None = None
    num_tokens: int = 0
    verifier: Callable[[str], bool] | None = None
    general: bool = False
    preference: float | None = None

    @classmethod
    def from_problem(cls, problem: Any, completion: str, num_tokens: int = 0) -> "RewardInput":
        """The input for a completion of an ``r1jax.data.Problem`` (read by attribute name, so
        rewards need not import the data package)."""
        return cls(completion=completion, answer=problem.answer, tests=tuple(problem.tests),
                   entry_point=problem.entry_point, code_prefix=problem.code_prefix,
                   test_setup=problem.test_setup, language=problem.language,
                   num_tokens=num_tokens, verifier=problem.verifier,
                   general=getattr(problem, "general", False))


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    """Which components count and how much.

    ``weights`` pairs component names with weights; components not named are not computed.
    ``max_tokens``/``cache_tokens`` are DAPO's L_max/L_cache (needed when ``overlong`` is weighted).
    ``think_prefilled``: the prompt ends with ``<think>`` (chat templates), so the format check
    starts inside the reasoning. ``code_partial_credit`` pays the fraction of tests passed instead
    of all-or-nothing.
    """

    weights: tuple[tuple[str, float], ...] = (("accuracy", 1.0), ("format", 1.0))
    max_tokens: int | None = None
    cache_tokens: int = 0
    think_prefilled: bool = False
    default_language: str = "en"
    code_timeout_s: float = 5.0
    code_partial_credit: bool = False
    sandbox: sandbox.SandboxConfig = sandbox.SandboxConfig()

    def __post_init__(self):
        names = [name for name, _ in self.weights]
        for name in names:
            if name not in COMPONENTS:
                raise ValueError(f"RewardConfig.weights: unknown component {name!r}; choose from {COMPONENTS}")
        if len(set(names)) != len(names):
            raise ValueError(f"RewardConfig.weights names a component twice: {names}")
        if "overlong" in names:
            if self.max_tokens is None:
                raise ValueError("RewardConfig: the 'overlong' component needs max_tokens (DAPO's L_max)")
            overlong_penalty(0, max_tokens=self.max_tokens, cache_tokens=self.cache_tokens)
        if self.code_timeout_s <= 0:
            raise ValueError(f"RewardConfig.code_timeout_s must be positive, got {self.code_timeout_s}")

    @classmethod
    def from_mapping(cls, weights: Mapping[str, float], **kwargs) -> "RewardConfig":
        """Builds the config from a ``{name: weight}`` mapping (what an ml_collections config holds)."""
        return cls(weights=tuple((str(k), float(v)) for k, v in weights.items()), **kwargs)


@dataclasses.dataclass(frozen=True)
class RewardBreakdown:
    """The total (None = could not judge) and every computed component, plus component errors."""

    total: float | None
    components: Mapping[str, float | None]
    errors: tuple[str, ...] = ()


def score(sample: RewardInput, config: RewardConfig = RewardConfig()) -> RewardBreakdown:
    """Computes every weighted component of one sample and their weighted sum."""
    components: dict[str, float | None] = {}
    errors: list[str] = []
    for name, _ in config.weights:
        try:
            components[name] = _COMPONENT_FNS[name](sample, config)
        except Exception as e:  # a raising reward is "could not judge", counted, never a crash
            components[name] = None
            errors.append(f"{name}: {type(e).__name__}: {e}")
    total: float | None = 0.0
    for name, weight in config.weights:
        if weight == 0.0:
            continue
        value = components[name]
        if value is None:
            total = None
            break
        total += weight * value
    return RewardBreakdown(total, components, tuple(errors))


def accuracy(sample: RewardInput, config: RewardConfig) -> float | None:
    """The accuracy component, judged by the sample's verifier, tests or gold answer. General
    prompts have no rule: 0 (the same for every sample of the prompt, so it moves no advantage)."""
    if sample.general:
        return 0.0
    if sample.verifier is not None:
        answer = extract_answer(sample.completion)
        return float(answer is not None and bool(sample.verifier(answer)))
    if sample.tests:
        task = code.CodeTask(code.parse_tests(sample.tests), sample.entry_point,
                             sample.code_prefix, sample.test_setup)
        return code.code_accuracy(sample.completion, task, timeout_s=config.code_timeout_s,
                                  partial_credit=config.code_partial_credit, config=config.sandbox)
    if sample.answer.strip():
        return math_accuracy(sample.completion, sample.answer)
    raise ValueError("sample has no verifier, tests or gold answer to judge accuracy by")


def _preference(sample: RewardInput, config: RewardConfig) -> float | None:
    """A preference reward model's score of a general prompt's completion (computed on the device
    by the trainer and carried in ``sample.preference``); 0 for prompts judged by rules."""
    if not sample.general:
        return 0.0
    return sample.preference


def _format(sample: RewardInput, config: RewardConfig) -> float:
    return 1.0 if check_format(sample.completion, think_prefilled=config.think_prefilled).ok else 0.0


def _language(sample: RewardInput, config: RewardConfig) -> float:
    return language_consistency(think_text(sample.completion), sample.language or config.default_language)


def _overlong(sample: RewardInput, config: RewardConfig) -> float:
    return overlong_penalty(sample.num_tokens, max_tokens=config.max_tokens, cache_tokens=config.cache_tokens)


_COMPONENT_FNS: dict[str, Callable[[RewardInput, RewardConfig], float | None]] = {
    "accuracy": accuracy, "preference": _preference, "format": _format, "language": _language,
    "overlong": _overlong,
}
