"""Synthetic verifiable tasks for CPU runs: seeded generators, difficulty levels, a train/test split
that is disjoint by construction, and a verifier per instance.

The split is a function of the instance's canonical key (a hash), not of the order of generation:
an instance is a test instance wherever and whenever it is drawn, so no seed, size or difficulty can
put the same problem on both sides. Generation draws instances and keeps those of the asked split.

Tasks: ``"arithmetic"`` (``r1jax.data.arithmetic``) and ``"countdown"`` (``r1jax.data.countdown``).
Each instance is a small frozen dataclass with ``question``, ``answer``, ``operands``, ``ops``,
``target``, the worked ``steps`` (``"3 + 4 = 7"``) and ``verify(answer) -> bool``, so other tools
(a pretraining corpus, say) can render the same problems in their own formats.
"""
from __future__ import annotations

import dataclasses
import hashlib
import random

from r1jax.data import arithmetic, countdown
from r1jax.data.problem import Problem, ProblemSet

SPLITS = ("train", "test")
TASKS = {"arithmetic": (arithmetic.LEVELS, arithmetic.sample),
         "countdown": (countdown.LEVELS, countdown.sample)}
Instance = arithmetic.ArithmeticProblem | countdown.CountdownProblem


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Which task, how hard, how many, which split.

    ``test_fraction`` is the share of the instance space reserved for test; it must be the same for
    the train and the test set of one experiment. ``unique`` forbids repeats within the set (for
    evaluation); it fails clearly when the split at that difficulty has too few distinct instances.
    """

    task: str = "arithmetic"
    difficulty: int = 1
    num_examples: int = 1000
    seed: int = 0
    split: str = "train"
    test_fraction: float = 0.1
    unique: bool = False

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"SyntheticConfig.task must be one of {sorted(TASKS)}, got {self.task!r}")
        levels = TASKS[self.task][0]
        if self.difficulty not in levels:
            raise ValueError(f"SyntheticConfig.difficulty for {self.task} must be one of {sorted(levels)}, "
                             f"got {self.difficulty}")
        if self.split not in SPLITS:
            raise ValueError(f"SyntheticConfig.split must be one of {SPLITS}, got {self.split!r}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"SyntheticConfig.test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.num_examples < 1:
            raise ValueError(f"SyntheticConfig.num_examples must be >= 1, got {self.num_examples}")


def split_of(key: str, test_fraction: float) -> str:
    """"test" for the ``test_fraction`` of canonical keys whose hash falls lowest, else "train"."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return "test" if int.from_bytes(digest, "big") < test_fraction * 2**64 else "train"


def generate(config: SyntheticConfig) -> tuple[Instance, ...]:
    """``config.num_examples`` instances of the asked split, the same for the same config."""
    levels, sample = TASKS[config.task]
    spec = levels[config.difficulty]
    # A string seed is hashed with SHA-512 by ``random``: stable across runs and Python versions.
    rng = random.Random(f"r1jax/{config.task}/{config.difficulty}/{config.split}/{config.seed}")
    instances: list[Instance] = []
    seen: set[str] = set()
    max_draws = 200 * config.num_examples + 10_000
    for _ in range(max_draws):
        instance = sample(rng, spec, config.difficulty)
        key = instance.key
        if split_of(key, config.test_fraction) != config.split:
            continue
        if config.unique:
            if key in seen:
                continue
            seen.add(key)
        instances.append(instance)
        if len(instances) == config.num_examples:
            return tuple(instances)
    raise ValueError(
        f"found only {len(instances)} of {config.num_examples} {config.split} instances of {config.task} "
        f"at difficulty {config.difficulty} in {max_draws} draws (unique={config.unique}); the space is "
        "too small: ask for fewer, raise the difficulty, or allow repeats")


def problem_set(config: SyntheticConfig) -> ProblemSet:
    """The generated instances as Problems judged by their own verifiers."""
    source = f"synthetic:{config.task}:d{config.difficulty}:{config.split}:seed{config.seed}"
    problems = tuple(
        Problem(id=f"{source}:{i}", question=inst.question, answer=inst.answer, language="en",
                source=source, verifier=inst.verify)
        for i, inst in enumerate(generate(config)))
    return ProblemSet(problems, source)
