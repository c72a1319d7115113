"""The synthetic pretraining corpus of the tiny base model (the R1-Zero analogue of V3-Base).

It teaches two things and shows neither the R1-Zero template nor its think/answer dialogue:

* **the skill** — arithmetic facts (``7 * 8 = 56``) and worked chains of the arithmetic task in
  several corpus-native formats ("Problem: … Work: 3 + 4 = 7 , 7 * 2 = 14 Result: 14"), plus
  documents that give the result directly without steps;
* **generic in-context format following** — an instruction names tags and the text after it uses
  exactly those tags (``r1jax.pretrain.formats``), with random tag names, roles and phrasings;
* a little plain prose, so the tokenizer and the model know the English words of the template.

Every multi-step chain is drawn from the train split (with each of its sub-chains), and every
document is checked by ``r1jax.pretrain.contamination.is_clean`` before it is kept, so held-out
problems at difficulty ≥ 2 never occur. Documents come in chunks, each seeded by its index: the
same config gives the same text, chunk by chunk, on any machine.
"""
from __future__ import annotations

import dataclasses
import random

from r1jax.data import arithmetic, synthetic
from r1jax.pretrain import contamination, formats, words
from r1jax.pretrain.formats import chance, pick

FAMILIES = ("facts", "worked", "direct", "tagged", "prose")
_OP_WORDS = {"+": "add {x}", "-": "subtract {x}", "*": "multiply by {x}", "/": "divide by {x}"}


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """What the corpus holds.

    ``difficulties``/``difficulty_weights``: the arithmetic levels chains are drawn from.
    ``test_fraction``: the synthetic split's test share; it must equal the one of the RL and eval
    sets (``SyntheticConfig.test_fraction``, default 0.1). ``max_integer``: every integer in
    ``[0, max_integer]`` is one token. ``mix``: relative weights of the document families.
    ``tagged_arithmetic``: share of format-following documents whose content is an arithmetic
    chain; ``brief_work``: share of those whose work tag only restates the problem;
    ``follow_rate``: share of tag instructions whose reply follows them (the rest answer in a
    plain format), which sets how often a base model follows an unseen format. ``tag_pieces``:
    the tokenizer's word-internal pieces that random tag names are built from (empty: letters;
    see ``formats.TagNamer``).
    """

    seed: int = 0
    difficulties: tuple[int, ...] = (1, 2, 3)
    difficulty_weights: tuple[float, ...] = (1.0, 3.0, 2.0)
    test_fraction: float = 0.1
    max_integer: int = 100
    mix: tuple[tuple[str, float], ...] = (("facts", 0.2), ("worked", 0.3), ("direct", 0.07),
                                          ("tagged", 0.38), ("prose", 0.05))
    tagged_arithmetic: float = 0.7
    brief_work: float = 0.2
    follow_rate: float = 0.4
    tag_pieces: tuple[str, ...] = ()

    def __post_init__(self):
        if len(self.difficulties) != len(self.difficulty_weights) or not self.difficulties:
            raise ValueError("CorpusConfig.difficulties and difficulty_weights must be non-empty "
                             "and of the same length")
        for d in self.difficulties:
            if d not in arithmetic.LEVELS:
                raise ValueError(f"CorpusConfig.difficulties: {d} is not an arithmetic level "
                                 f"({sorted(arithmetic.LEVELS)})")
            if arithmetic.LEVELS[d].max_value > self.max_integer:
                raise ValueError(
                    f"CorpusConfig.max_integer={self.max_integer} is below difficulty {d}'s "
                    f"max_value {arithmetic.LEVELS[d].max_value}; raise max_integer")
        unknown = {name for name, _ in self.mix} - set(FAMILIES)
        if unknown:
            raise ValueError(f"CorpusConfig.mix: unknown families {sorted(unknown)}; "
                             f"choose from {FAMILIES}")
        for name in ("tagged_arithmetic", "brief_work", "follow_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"CorpusConfig.{name} must be in [0, 1], got "
                                 f"{getattr(self, name)}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"CorpusConfig.test_fraction must be in (0, 1), got "
                             f"{self.test_fraction}")


def _weighted(rng: random.Random, names, weights):
    u, total = rng.random() * sum(weights), 0.0
    for name, weight in zip(names, weights):
        total += weight
        if u < total:
            return name
    return names[-1]


# --- arithmetic -----------------------------------------------------------------------------

def train_chain(rng: random.Random, cfg: CorpusConfig) -> arithmetic.ArithmeticProblem:
    """A random chain whose every sub-chain of ≥ 2 steps (and itself) is in the train split."""
    level = _weighted(rng, cfg.difficulties, cfg.difficulty_weights)
    while True:
        problem = arithmetic.sample(rng, arithmetic.LEVELS[level], level)
        start, ops, operands = problem.operands[0], problem.ops, problem.operands[1:]
        keys = contamination.sub_chain_keys(start, ops, operands, min_ops=min(2, len(ops)))
        if all(synthetic.split_of(k, cfg.test_fraction) == "train" for k in keys):
            return problem


def question_text(rng, problem: arithmetic.ArithmeticProblem) -> str:
    """The task's own wording (mostly) or a paraphrase."""
    phrases = [_OP_WORDS[op].format(x=x) for op, x in zip(problem.ops, problem.operands[1:])]
    u = rng.random()
    if u < 0.7:
        return problem.question
    if u < 0.85:
        return f"Begin with {problem.operands[0]}, then {', then '.join(phrases)}. " \
               "What number do you get?"
    return f"Take {problem.operands[0]}. " + " ".join(p.capitalize() + "." for p in phrases) + \
        " What is the final value?"


def work_text(rng, steps) -> str:
    u = rng.random()
    if u < 0.55:
        return " , ".join(steps)
    if u < 0.7:
        return ". ".join(steps) + "."
    if u < 0.85:
        return f"First {steps[0]}." + "".join(f" Then {s}." for s in steps[1:])
    return "\n".join(steps)


def brief_text(problem: arithmetic.ArithmeticProblem) -> str:
    """The problem restated as an expression, without working it."""
    return f"start {problem.operands[0]} , " + " , ".join(
        _OP_WORDS[op].format(x=x) for op, x in zip(problem.ops, problem.operands[1:]))


_WORKED = (
    "Problem: {q} Work: {w} Result: {a}",
    "Problem: {q}\nWork: {w}\nResult: {a}",
    "Q: {q}\nSteps: {w}\nSo the result is {a}.",
    "Exercise {n}. {q}\nSolution. {w} The final value is {a}.",
    "{q} Let us compute step by step. {w} Therefore the result is {a}.",
    "{q}\n{w}\nThe answer is {a}.",
)
_DIRECT = (
    "Problem: {q} Result: {a}",
    "Q: {q}\nA: {a}",
    "{q} The result is {a}.",
    "Exercise {n}. {q}\nThe final value is {a}.",
)


def worked_document(rng, cfg: CorpusConfig) -> str:
    count = 1 if chance(rng, 0.6) else formats.randint(rng, 2, 4)
    docs = []
    for _ in range(count):
        p = train_chain(rng, cfg)
        docs.append(pick(rng, _WORKED).format(q=question_text(rng, p), w=work_text(rng, p.steps),
                                              a=p.answer, n=formats.randint(rng, 1, 40)))
    return ("Worksheet.\n" if count > 1 else "") + "\n".join(docs)


def direct_document(rng, cfg: CorpusConfig) -> str:
    count = 1 if chance(rng, 0.6) else formats.randint(rng, 2, 4)
    return "\n".join(pick(rng, _DIRECT).format(q=question_text(rng, p), a=p.answer,
                                               n=formats.randint(rng, 1, 40))
                     for p in (train_chain(rng, cfg) for _ in range(count)))


def random_fact(rng, cfg: CorpusConfig) -> str:
    """A single fact: mostly a step of a random chain (the facts the task needs, as often as it
    needs them), else uniform over small operands and results up to ``max_integer``."""
    if chance(rng, 0.6):
        level = _weighted(rng, cfg.difficulties, cfg.difficulty_weights)
        problem = arithmetic.sample(rng, arithmetic.LEVELS[level], level)
        return pick(rng, problem.steps)
    op = pick(rng, "+-*/")
    top = cfg.max_integer
    b = formats.randint(rng, 1 if op in "+-" else 2, 12)
    if op == "+":
        a = formats.randint(rng, 0, top - b)
        c = a + b
    elif op == "-":
        a = formats.randint(rng, b, top)
        c = a - b
    elif op == "*":
        a = formats.randint(rng, 0, top // b)
        c = a * b
    else:
        c = formats.randint(rng, 0, top // b)
        a = c * b
    if op in "+*" and chance(rng, 0.2):
        a, b = b, a
    return f"{a} {op} {b} = {c}"


def facts_document(rng, cfg: CorpusConfig) -> str:
    facts = [random_fact(rng, cfg) for _ in range(formats.randint(rng, 4, 16))]
    head = pick(rng, ("Facts: ", "Arithmetic practice. ", "", "Drill:\n", "Check these: "))
    return head + pick(rng, (" , ", "\n", ". ", " ; ")).join(facts)


def arithmetic_task(rng, cfg: CorpusConfig) -> formats.Task:
    p = train_chain(rng, cfg)
    work = brief_text(p) if chance(rng, cfg.brief_work) else work_text(rng, p.steps)
    return question_text(rng, p), work, p.answer


def fact_task(rng, cfg: CorpusConfig) -> formats.Task:
    fact = random_fact(rng, cfg)
    left, value = fact.split(" = ")
    return f"What is {left}?", fact, value


def tagged_document(rng, cfg: CorpusConfig) -> str:
    def task():
        u = rng.random()
        if u < cfg.tagged_arithmetic:
            return arithmetic_task(rng, cfg)
        if u < cfg.tagged_arithmetic + (1 - cfg.tagged_arithmetic) / 4:
            return fact_task(rng, cfg)
        return pick(rng, formats.WORD_TASKS)(rng)

    names = formats.TagNamer(cfg.tag_pieces)
    kind = _weighted(rng, ("list", "one", "two", "three"), (0.12, 0.2, 0.53, 0.15))
    if kind == "list":
        return formats.list_document(rng, names)
    follow = chance(rng, cfg.follow_rate)
    if kind == "one":
        return formats.one_tag_document(rng, names, task(), follow)
    if kind == "three":
        return formats.three_tag_document(rng, names, task(), follow)
    return formats.two_tag_document(
        rng, names, [task() for _ in range(formats.randint(rng, 1, 4))], follow)


# --- prose ----------------------------------------------------------------------------------

_SENTENCES = (
    "The {adj} {n1} {verb} the {n2} {prep} the {n3}.",
    "A {n1} {verb} a {n2}, and then {verb2} it.",
    "Each {n1} has {num} {n2}s {prep} it.",
    "The {n1} {verb} about the {n2} first, then the {n3}.",
    "The user of the {n1} {verb} the {n2}.",
    "An assistant at the {n1} provides the {n2} with a {n3}.",
    "She thinks about the {n1} in her mind.",
    "The reasoning process of the {n1} is simple.",
    "The answer to the {adj} question is here, {prep} the {n1}.",
    "The {n1}s are enclosed within the {n2} and the {n3}, respectively.",
    "User {name} asks a {adj} question about the {n1}.",
    "Assistant {name} solves the {n1} and then {verb} the {n2}.",
    "A conversation {prep} the {n1} and the {n2} is {adj}.",
    "The {n1} first thinks, then provides the {n2}.",
    "Tags on the {n1} show the {n2}, i.e., the {adj} {n3}.",
)
_NAMES = ("Kim", "Ana", "Lee", "Omar", "Nia", "Ravi", "Sara", "Tom", "Eva", "Ben")


def _sentence(rng) -> str:
    return pick(rng, _SENTENCES).format(
        adj=pick(rng, words.ADJECTIVES), n1=pick(rng, words.NOUNS), n2=pick(rng, words.NOUNS),
        n3=pick(rng, words.NOUNS), verb=pick(rng, words.VERBS), verb2=pick(rng, words.VERBS),
        prep=pick(rng, words.PREPOSITIONS), num=formats.randint(rng, 2, 60),
        name=pick(rng, _NAMES))


def prose_document(rng, cfg: CorpusConfig) -> str:
    return " ".join(_sentence(rng) for _ in range(formats.randint(rng, 2, 6)))


_MAKERS = {"facts": facts_document, "worked": worked_document, "direct": direct_document,
           "tagged": tagged_document, "prose": prose_document}


def document(rng: random.Random, cfg: CorpusConfig) -> str:
    """One clean document of a family drawn by ``cfg.mix`` (unclean draws are redrawn)."""
    names, weights = zip(*cfg.mix)
    family = _weighted(rng, names, weights)
    while True:
        doc = _MAKERS[family](rng, cfg)
        if contamination.is_clean(doc, cfg.test_fraction):
            return doc


def chunk(cfg: CorpusConfig, index: int, num_docs: int, stream: str = "train") -> list[str]:
    """Documents ``[index·num_docs, (index+1)·num_docs)`` of a named stream; a string seed is
    hashed with SHA-512 by ``random``, so the text is the same on every machine."""
    rng = random.Random(f"r1jax/pretrain/{stream}/{cfg.seed}/{index}")
    return [document(rng, cfg) for _ in range(num_docs)]


def integer_symbols(max_integer: int) -> list[str]:
    """The tokenizer's user-defined symbols: every integer in ``[0, max_integer]`` after a space
    (with sentencepiece's word-start marker), which is how the corpus and the tasks write them:
    " 14" is one token."""
    return ["\u2581" + str(i) for i in range(max_integer + 1)]
