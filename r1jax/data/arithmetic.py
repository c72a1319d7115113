"""Multi-step arithmetic: start with a number, apply a chain of operations, report the result.

    Start with 3, add 4, multiply by 2, subtract 5. What is the result?    ->  9
    steps: "3 + 4 = 7", "7 * 2 = 14", "14 - 5 = 9"

Every intermediate value is a whole number in [0, ``max_value``] (subtraction never goes below 0,
division is exact), so the worked steps stay small and a tiny model can learn them.
"""
from __future__ import annotations

import dataclasses
import random
import re

_OP_WORDS = {"+": "add {x}", "-": "subtract {x}", "*": "multiply by {x}", "/": "divide by {x}"}
_INTEGER = re.compile(r"[+-]?(\d{1,3}(,\d{3})+|\d+)")


@dataclasses.dataclass(frozen=True)
class ArithmeticSpec:
    """How hard: the number of operations, the largest operand, the operations allowed, and the
    bound on every intermediate value."""

    num_steps: int
    max_operand: int
    ops: str = "+-*"
    max_value: int = 100

    def __post_init__(self):
        if self.num_steps < 1 or self.max_operand < 2 or self.max_value < self.max_operand:
            raise ValueError(f"bad ArithmeticSpec {self}: need num_steps >= 1, max_operand >= 2, "
                             "max_value >= max_operand")
        if not self.ops or set(self.ops) - set(_OP_WORDS):
            raise ValueError(f"ArithmeticSpec.ops must be drawn from '+-*/', got {self.ops!r}")


LEVELS = {
    1: ArithmeticSpec(num_steps=1, max_operand=9, ops="+-", max_value=20),
    2: ArithmeticSpec(num_steps=2, max_operand=9, ops="+-*", max_value=50),
    3: ArithmeticSpec(num_steps=3, max_operand=12, ops="+-*", max_value=100),
    4: ArithmeticSpec(num_steps=4, max_operand=15, ops="+-*/", max_value=200),
    5: ArithmeticSpec(num_steps=5, max_operand=20, ops="+-*/", max_value=500),
}


@dataclasses.dataclass(frozen=True)
class ArithmeticProblem:
    """One chain: ``operands[0]`` then ``ops[i]`` with ``operands[i + 1]``; ``target`` is the result.

    ``steps`` are the worked solution, one ``"a op b = c"`` per operation; ``answer`` is the gold
    answer string (``str(target)``).
    """

    operands: tuple[int, ...]
    ops: tuple[str, ...]
    target: int
    steps: tuple[str, ...]
    question: str
    answer: str
    difficulty: int = 0

    @property
    def key(self) -> str:
        """The canonical form: two instances with the same key are the same problem."""
        chain = str(self.operands[0]) + "".join(f"{op}{x}" for op, x in zip(self.ops, self.operands[1:]))
        return f"arithmetic:{chain}"

    def verify(self, answer: str) -> bool:
        """True if ``answer`` is the result as a whole number ("9", " 9.", "+9"; "1,000" for 1000)."""
        value = parse_integer(answer)
        return value is not None and value == self.target


def build(operands: tuple[int, ...], ops: tuple[str, ...], difficulty: int = 0) -> ArithmeticProblem:
    """The problem for a given chain, with its steps and question; raises ValueError if a step
    leaves the whole numbers (negative, or inexact division)."""
    if len(operands) != len(ops) + 1 or not ops:
        raise ValueError(f"need one more operand than ops, got {operands} and {ops}")
    value, steps = operands[0], []
    for op, x in zip(ops, operands[1:]):
        result = apply_op(value, op, x)
        steps.append(f"{value} {op} {x} = {result}")
        value = result
    words = ", ".join(_OP_WORDS[op].format(x=x) for op, x in zip(ops, operands[1:]))
    question = f"Start with {operands[0]}, {words}. What is the result?"
    return ArithmeticProblem(tuple(operands), tuple(ops), value, tuple(steps), question, str(value), difficulty)


def sample(rng: random.Random, spec: ArithmeticSpec, difficulty: int = 0) -> ArithmeticProblem:
    """A random chain: each step picks an operation that has a valid operand, then the operand."""
    value = randint(rng, 1, spec.max_operand)
    operands, ops = [value], []
    for _ in range(spec.num_steps):
        choices = {op: _operand_range(value, op, spec) for op in spec.ops}
        choices = {op: r for op, r in choices.items() if r is not None}
        op = sorted(choices)[randint(rng, 0, len(choices) - 1)]
        x = _pick_operand(rng, value, op, *choices[op])
        operands.append(x)
        ops.append(op)
        value = apply_op(value, op, x)
    return build(tuple(operands), tuple(ops), difficulty)


def parse_integer(text: str) -> int | None:
    """A whole number written plainly (sign, digits, optional thousands commas, trailing period)."""
    text = text.strip().rstrip(".").strip()
    if not _INTEGER.fullmatch(text):
        return None
    return int(text.replace(",", ""))


def randint(rng: random.Random, low: int, high: int) -> int:
    """Uniform in [low, high], built on ``rng.random()`` alone: Python guarantees that stream across
    versions, while ``randint``/``choice`` may change — and the data set must not."""
    return low + min(int(rng.random() * (high - low + 1)), high - low)


def _operand_range(value: int, op: str, spec: ArithmeticSpec) -> tuple[int, int] | None:
    """The operands that keep ``value op x`` a whole number in [0, max_value], or None if none do."""
    if op == "+":
        low, high = 1, min(spec.max_operand, spec.max_value - value)
    elif op == "-":
        low, high = 1, min(spec.max_operand, value)
    elif op == "*":
        low, high = 2, (min(spec.max_operand, spec.max_value // value) if value > 0 else 0)
    else:
        low, high = 2, spec.max_operand
        if not _divisors(value, low, high):
            return None
    return (low, high) if high >= low else None


def _pick_operand(rng: random.Random, value: int, op: str, low: int, high: int) -> int:
    if op == "/":
        divisors = _divisors(value, low, high)
        return divisors[randint(rng, 0, len(divisors) - 1)]
    return randint(rng, low, high)


def _divisors(value: int, low: int, high: int) -> list[int]:
    return [x for x in range(low, high + 1) if value > 0 and value % x == 0]


def apply_op(value: int, op: str, x: int) -> int:
    """One step of a chain, ``value op x``; raises ValueError if it leaves the whole numbers."""
    if op == "+":
        return value + x
    if op == "-":
        if x > value:
            raise ValueError(f"{value} - {x} is negative")
        return value - x
    if op == "*":
        return value * x
    if op == "/":
        if x == 0 or value % x:
            raise ValueError(f"{value} / {x} is not a whole number")
        return value // x
    raise ValueError(f"unknown operation {op!r}")
