"""Format-following documents: an instruction names tags, and the text after it uses exactly them.

Tag names, role names, phrasings and contents are drawn at random, so what a model learns is to
copy the *instruction's* names and order — lists, single-tag results, two-tag work/result replies,
three tags, reversed orders — not any one fixed format. The contents are small tasks with worked
steps (arithmetic chains from the train split, counting, ordering, comparing, spelling).
"""
from __future__ import annotations

import dataclasses
import random
from typing import Callable

from r1jax.data.arithmetic import randint
from r1jax.pretrain import words

Task = tuple[str, str, str]  # (question, work, result)


def pick(rng: random.Random, seq):
    """A uniform element (``rng.random()`` only, so the stream is stable across Python versions)."""
    return seq[randint(rng, 0, len(seq) - 1)]


def chance(rng: random.Random, p: float) -> bool:
    return rng.random() < p


def pseudo_word(rng: random.Random) -> str:
    return "".join(pick(rng, words.SYLLABLES) for _ in range(randint(rng, 1, 3)))


def random_letters(rng: random.Random) -> str:
    return "".join(pick(rng, words.LETTERS) for _ in range(randint(rng, 2, 9)))


# The R1-Zero template's roles are never (part of) a tag name. Its tag words are ordinary names,
# as on the web: "think" and "answer" are each one name of the work/result pools (never part of
# another name, never both in one document), so a base model has seen those pieces copied
# without ever seeing the template's think-then-answer reply.
_RESERVED = ("user", "assistant")
TEMPLATE_TAGS = ("think", "answer")


def _allowed(name: str) -> bool:
    if any(r in name for r in _RESERVED):
        return False
    return name in TEMPLATE_TAGS or not any(t in name for t in TEMPLATE_TAGS)


@dataclasses.dataclass(frozen=True)
class TagNamer:
    """Draws tag names that only copying can predict.

    Half are random strings: of 1-3 of the tokenizer's word-internal pieces (``pieces``, so that
    every piece a tag name can tokenize into is seen being copied), or of letters before there is
    a tokenizer. The rest: made-up syllable words (20%), any known word (15%), one from the slot's
    ``pool`` (15%). A name never contains "user" or "assistant", and contains "think" or
    "answer" only by being exactly that word.
    """

    pieces: tuple[str, ...] = ()

    def random_string(self, rng: random.Random) -> str:
        if not self.pieces:
            return random_letters(rng)
        return "".join(pick(rng, self.pieces) for _ in range(randint(rng, 1, 3)))

    def __call__(self, rng: random.Random, pool: tuple[str, ...]) -> str:
        while True:
            u = rng.random()
            if u < 0.5:
                name = self.random_string(rng)
            elif u < 0.7:
                name = pseudo_word(rng)
            elif u < 0.85:
                name = pick(rng, words.NOUNS + words.VERBS + words.ADJECTIVES + words.OTHER_TAGS)
            else:
                name = pick(rng, pool)
            if _allowed(name):
                return name

    def two(self, rng: random.Random) -> tuple[str, str]:
        """A work tag and a different result tag."""
        work, result = self(rng, words.WORK_TAGS), self(rng, words.RESULT_TAGS)
        while result == work or {work, result} == set(TEMPLATE_TAGS):
            result = self(rng, words.RESULT_TAGS)
        return work, result


def wrap(tag: str, text: str) -> str:
    return f"<{tag}> {text} </{tag}>"


# --- small tasks with worked steps -----------------------------------------------------------

def _count_task(rng):
    items = [pick(rng, words.NOUNS) for _ in range(randint(rng, 2, 6))]
    question = f"How many words are in this list: {', '.join(items)}?"
    work = " , ".join(f"{item} {i}" for i, item in enumerate(items, 1))
    return question, work, str(len(items))


def _reverse_task(rng):
    items = [pick(rng, words.NOUNS + words.ADJECTIVES) for _ in range(randint(rng, 2, 5))]
    question = f"Reverse the order of: {' '.join(items)}."
    work = " , ".join(f"{i} is {item}" for i, item in reversed(list(enumerate(items, 1))))
    return question, work, " ".join(reversed(items))


def _largest_task(rng):
    numbers = [randint(rng, 0, 100) for _ in range(randint(rng, 2, 5))]
    question = f"Which number is the largest: {', '.join(map(str, numbers))}?"
    best, steps = numbers[0], []
    for x in numbers[1:]:
        steps.append(f"{max(best, x)} is more than {min(best, x)}" if x != best else f"{x} equals {x}")
        best = max(best, x)
    return question, " , ".join(steps) or f"only {best}", str(best)


def _spell_task(rng):
    word = pick(rng, words.NOUNS)
    question = f"What is the first letter of the word {word}?"
    return question, f"{word} is spelled {' '.join(word)}", word[0]


def _compare_task(rng):
    a, b = randint(rng, 0, 100), randint(rng, 0, 100)
    question = f"Is {a} more than {b}?"
    work = f"{a} - {b} = {a - b}" if a >= b else f"{b} - {a} = {b - a} so {b} is more"
    return question, work, "yes" if a > b else "no"


WORD_TASKS: tuple[Callable[[random.Random], Task], ...] = (
    _count_task, _reverse_task, _largest_task, _spell_task, _compare_task)


# --- framings -------------------------------------------------------------------------------

_PREAMBLES = (
    "A dialogue between {A} and {B}.",
    "Here {A} asks and {B} replies.",
    "The following is a chat between {A} and {B}. {A} poses a problem, and {B} works it out.",
    "{B} helps {A} with small problems.",
    "In this exchange, {A} gives a task and {B} completes it.",
    "Notes from a lesson. {A} brings a question and {B} explains it.",
    "{A} and {B} talk. {B} always shows the work before the result.",
)

_TWO_TAG_RULES = (
    "The {w} and {r} are enclosed within <{x}> </{x}> and <{y}> </{y}> tags, respectively, "
    "i.e., <{x}> {w} here </{x}> <{y}> {r} here </{y}>.",
    "{B} writes the {w} inside <{x}> </{x}> and then the {r} inside <{y}> </{y}>.",
    "Format: <{x}> {w} </{x}> <{y}> {r} </{y}>.",
    "Use two tags: <{x}> for the {w} and <{y}> for the {r}.",
    "Reply as <{x}> ... </{x}> followed by <{y}> ... </{y}>, the first holding the {w} and the "
    "second the {r}.",
    "First show the {w} in <{x}> </{x}>, then give the {r} in <{y}> </{y}>.",
    "Put the {w} between <{x}> and </{x}>, and the {r} between <{y}> and </{y}>.",
    "Every reply has the form <{x}> {w} </{x}> <{y}> {r} </{y}>.",
)

_ONE_TAG_RULES = (
    "Give the {r} within <{y}> </{y}> tags.",
    "Put only the {r} inside <{y}> </{y}>.",
    "Mark the {r} with <{y}> and </{y}>.",
    "The {r} goes in <{y}> </{y}>.",
)

_LIST_RULES = (
    "Put each {thing} inside <{t}> </{t}> tags.",
    "List the {thing}s below, one per <{t}> </{t}> pair.",
    "Wrap every {thing} in <{t}> and </{t}>.",
    "Write the {thing}s as <{t}> {thing} </{t}>, one after another.",
)


def _roles(rng):
    a, b = pick(rng, words.ROLE_PAIRS)
    return (b, a) if chance(rng, 0.2) else (a, b)


def _turn(rng, speaker: str, text: str) -> str:
    return f"{speaker}: {text}"


def plain_reply(rng, work: str, result: str) -> str:
    """A reply that ignores the requested tags (the instruction is not always followed)."""
    u = rng.random()
    if u < 0.4:
        return f"Work: {work} Result: {result}"
    if u < 0.7:
        return f"{work} . So the result is {result}."
    if u < 0.85:
        return f"Result: {result}"
    return result


def list_document(rng, names: TagNamer) -> str:
    thing = pick(rng, ("item", "word", "name", "entry", "thing", "number"))
    tag = names(rng, words.OTHER_TAGS)
    if thing == "number":
        items = [str(randint(rng, 0, 200)) for _ in range(randint(rng, 2, 6))]
    else:
        items = [pick(rng, words.NOUNS) for _ in range(randint(rng, 2, 6))]
    rule = pick(rng, _LIST_RULES).format(thing=thing, t=tag)
    out = " ".join(wrap(tag, item) for item in items)
    if chance(rng, 0.5):
        a, b = _roles(rng)
        return f"{_turn(rng, a, rule + ' ' + ', '.join(items) + '.')}\n{_turn(rng, b, out)}"
    return f"{rule} {thing.capitalize()}s: {', '.join(items)}.\n{out}"


def one_tag_document(rng, names: TagNamer, task: Task, follow: bool = True) -> str:
    question, work, result = task
    tag = names(rng, words.RESULT_TAGS)
    rule = pick(rng, _ONE_TAG_RULES).format(r=pick(rng, words.RESULT_PHRASES), y=tag)
    reply = wrap(tag, result)
    if chance(rng, 0.5):
        reply = f"{work.rstrip('. ')} . So {reply}"
    if not follow:
        reply = plain_reply(rng, work, result)
    a, b = _roles(rng)
    sep = pick(rng, (" ", "\n"))
    return f"{_turn(rng, a, question + ' ' + rule)}{sep}{_turn(rng, b, reply)}"


def two_tag_document(rng, names: TagNamer, tasks: list[Task], follow: bool = True) -> str:
    """An instruction naming a work tag and a result tag, then exchanges that use them (or, when
    not ``follow``, that ignore them)."""
    a, b = _roles(rng)
    x, y = names.two(rng)
    w, r = pick(rng, words.WORK_PHRASES), pick(rng, words.RESULT_PHRASES)
    parts = []
    if chance(rng, 0.6):
        parts.append(pick(rng, _PREAMBLES).format(A=a, B=b))
    parts.append(pick(rng, _TWO_TAG_RULES).format(w=w, r=r, x=x, y=y, B=b))
    sep = pick(rng, (" ", "\n"))
    dot = pick(rng, (".", "", ""))
    for question, work, result in tasks:
        reply = f"{wrap(x, work)} {wrap(y, result)}" if follow else plain_reply(rng, work, result)
        parts.append(f"{a}: {question}{dot}{sep}{b}: {reply}")
    return sep.join(parts)


def three_tag_document(rng, names: TagNamer, task: Task, follow: bool = True) -> str:
    """Three named tags in an order the instruction gives (sometimes result first)."""
    question, work, result = task
    x, y = names.two(rng)
    z = names(rng, words.OTHER_TAGS)
    while z in (x, y):
        z = names(rng, words.OTHER_TAGS)
    slots = [(z, "question", question.rstrip("?.")), (x, pick(rng, words.WORK_PHRASES), work),
             (y, pick(rng, words.RESULT_PHRASES), result)]
    if chance(rng, 0.5):
        slots = slots[1:]
    if chance(rng, 0.3):
        slots = slots[::-1]
    names = ", ".join(f"the {desc} in <{t}> </{t}>" for t, desc, _ in slots)
    rule = f"Write {names}, in this order."
    a, b = _roles(rng)
    reply = " ".join(wrap(t, text) for t, _, text in slots)
    if not follow:
        reply = plain_reply(rng, work, result)
    return f"{rule}\n{a}: {question}\n{b}: {reply}"
