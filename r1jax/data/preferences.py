"""Preference data for reward models: (prompt, chosen, rejected) triples, from JSONL or synthetic.

JSONL lines hold ``prompt`` (or ``question``/``instruction``), ``chosen`` and ``rejected``; a bad
line raises a ``DataError`` naming the file, the line and the field.

The synthetic set is general instruction following for CPU runs — prompts with no rule-based
verifier in the trainer, judged by a reward model instead: *say a (made-up) word* (the chosen reply
says it, the rejected one another word), *repeat a word n times* (the rejected reply repeats it a
number of times at least 2 off) and *count up* from one number to another (the rejected reply skips
or repeats a number). Seeded, with train and test disjoint by a hash of the prompt.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random

from r1jax.data.problem import DataError, Problem, ProblemSet

WORDS = ("apple", "river", "stone", "cloud", "green", "light", "table", "music", "happy", "ocean",
         "tiger", "paper", "glass", "sugar", "horse", "bread", "chair", "dream", "earth", "flame",
         "grape", "heart", "lemon", "mouse", "night", "piano", "queen", "robot", "snake", "train",
         "beach", "candy", "dance", "eagle", "field", "ghost", "honey", "juice", "knife", "laser",
         "magic", "north", "olive", "pearl", "radio", "salad", "tower", "uncle", "voice", "whale",
         "yacht", "zebra", "amber", "brick", "coral", "denim", "ember", "frost", "globe", "hazel")
KINDS = ("say", "repeat", "count")
_SYLLABLES = tuple(c + v for c in "bdfgklmnprstvz" for v in "aeiou")


def _pseudo_word(rng: random.Random) -> str:
    """One of ~2.7 million made-up words: enough that copying, not memory, is what scores."""
    return "".join(_SYLLABLES[rng.randrange(len(_SYLLABLES))] for _ in range(rng.randint(2, 3)))


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str


def load_pairs(path: str | os.PathLike) -> list[PreferencePair]:
    """Every line of a preference JSONL file, checked."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"preference file {path!r} does not exist")
    pairs = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise DataError(f"not a JSON line ({e})", path=path, line=number) from None
            if not isinstance(record, dict):
                raise DataError("a line must be a JSON object", path=path, line=number)
            prompt = next((record[k] for k in ("prompt", "question", "instruction")
                           if k in record), None)
            values = {"prompt": prompt, "chosen": record.get("chosen"),
                      "rejected": record.get("rejected")}
            for field, value in values.items():
                if not isinstance(value, str) or not value.strip():
                    raise DataError("missing or empty text", path=path, line=number, field=field)
            if values["chosen"] == values["rejected"]:
                raise DataError("chosen and rejected are identical", path=path, line=number)
            pairs.append(PreferencePair(**values))
    if not pairs:
        raise DataError("no preference pairs", path=path)
    return pairs


def _split(prompt: str, test_fraction: float) -> str:
    digest = hashlib.blake2b(prompt.encode("utf-8"), digest_size=8).digest()
    return "test" if int.from_bytes(digest, "big") < test_fraction * 2**64 else "train"


def _instruction(rng: random.Random, kinds: tuple[str, ...]) -> tuple[str, str, str]:
    """(prompt, a correct reply, a wrong reply)."""
    kind = kinds[rng.randrange(len(kinds))]
    word = WORDS[rng.randrange(len(WORDS))]
    if kind == "say":
        word, other = _pseudo_word(rng), _pseudo_word(rng)
        while other == word:
            other = _pseudo_word(rng)
        return f"Say the word {word}.", word, other
    if kind == "repeat":
        n = rng.randint(2, 5)
        wrong = rng.choice([k for k in range(1, 8) if abs(k - n) >= 2])
        return (f"Repeat the word {word} {n} times.", " ".join([word] * n),
                " ".join([word] * wrong))
    start = rng.randint(1, 40)
    stop = start + rng.randint(3, 6)
    numbers = list(range(start, stop + 1))
    wrong = list(numbers)
    i = rng.randrange(1, len(wrong) - 1)
    if rng.random() < 0.5:
        del wrong[i]
    else:
        wrong.insert(i, wrong[i])
    return (f"Count from {start} to {stop}.", " ".join(map(str, numbers)),
            " ".join(map(str, wrong)))


def synthetic_pairs(num: int, *, seed: int = 0, split: str = "train", test_fraction: float = 0.2,
                    kinds: tuple[str, ...] = KINDS) -> list[PreferencePair]:
    """``num`` pairs of the synthetic instruction tasks (``kinds`` of ``KINDS``) from a split."""
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"preference task kinds {sorted(unknown) or kinds} are not in {KINDS}")
    rng = random.Random(f"r1jax/preferences/{split}/{seed}")
    pairs = []
    for _ in range(200 * num + 1000):
        prompt, good, bad = _instruction(rng, tuple(kinds))
        if _split(prompt, test_fraction) == split:
            pairs.append(PreferencePair(prompt, good, bad))
            if len(pairs) == num:
                return pairs
    raise ValueError(f"could not draw {num} {split} preference pairs")


def general_problems(num: int, *, seed: int = 0, split: str = "train",
                     test_fraction: float = 0.2, kinds: tuple[str, ...] = KINDS) -> ProblemSet:
    """The synthetic instructions as general prompts (judged by a reward model in RL)."""
    source = f"synthetic:general:{split}:seed{seed}"
    pairs = synthetic_pairs(num, seed=seed, split=split, test_fraction=test_fraction,
                            kinds=kinds)
    return ProblemSet(tuple(Problem(id=f"{source}:{i}", question=p.prompt, language="en",
                                    source=source, general=True)
                            for i, p in enumerate(pairs)), source)
