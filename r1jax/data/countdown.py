"""Countdown: reach the target from the given numbers, using each exactly once with + - * /.

    Using the numbers 3, 4, 2, make 14. Use each number exactly once with + - * /.  ->  (3 + 4) * 2
    steps: "3 + 4 = 7", "7 * 2 = 14"

Instances are built backwards from a random solution, so every one is solvable; any correct
expression is accepted, not only the one it was built from. As in TinyZero's Countdown, all numbers
must be used. Intermediate values stay whole and positive (no 0, no fractions) in the gold
solution; a proposed answer may use any rational intermediates.
"""
from __future__ import annotations

import ast
import dataclasses
import random
from fractions import Fraction

from r1jax.data.arithmetic import parse_integer, randint

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_AST_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_MAX_ANSWER_CHARS = 200


@dataclasses.dataclass(frozen=True)
class CountdownSpec:
    """How hard: how many numbers, their range, and the largest target / intermediate value."""

    num_numbers: int
    max_number: int
    max_target: int = 100
    max_value: int = 1000

    def __post_init__(self):
        if self.num_numbers < 2 or self.max_number < 2 or self.max_target < 1:
            raise ValueError(f"bad CountdownSpec {self}: need num_numbers >= 2, max_number >= 2, max_target >= 1")


LEVELS = {
    1: CountdownSpec(num_numbers=2, max_number=9, max_target=50),
    2: CountdownSpec(num_numbers=3, max_number=9, max_target=100),
    3: CountdownSpec(num_numbers=3, max_number=20, max_target=100),
    4: CountdownSpec(num_numbers=4, max_number=20, max_target=200),
    5: CountdownSpec(num_numbers=5, max_number=25, max_target=500),
}


@dataclasses.dataclass(frozen=True)
class CountdownProblem:
    """One instance: ``operands`` (the numbers given), ``target``; ``ops`` and ``steps`` are the
    gold solution's operations and its worked steps; ``answer`` is its expression."""

    operands: tuple[int, ...]
    ops: tuple[str, ...]
    target: int
    steps: tuple[str, ...]
    question: str
    answer: str
    difficulty: int = 0

    @property
    def key(self) -> str:
        """The canonical form: same multiset of numbers and same target means the same problem."""
        return f"countdown:{','.join(map(str, sorted(self.operands)))}->{self.target}"

    def verify(self, answer: str) -> bool:
        """True if ``answer`` ("(3 + 4) * 2", optionally followed by "= 14") uses each number
        exactly once, only + - * / and parentheses, and equals the target exactly."""
        return check_expression(answer, self.operands, self.target)


def check_expression(answer: str, numbers: tuple[int, ...], target: int) -> bool:
    """The Countdown rule on one expression; never raises, never runs code."""
    text = answer.strip().replace("×", "*").replace("÷", "/").replace("−", "-")
    if not text or len(text) > _MAX_ANSWER_CHARS:
        return False
    if "=" in text:
        left, _, right = text.partition("=")
        if "=" in right or parse_integer(right) != target:
            return False
        text = left
    try:
        tree = ast.parse(text.strip(), mode="eval")
        used: list[int] = []
        value = _evaluate(tree.body, used)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return False
    return sorted(used) == sorted(numbers) and value == target


def sample(rng: random.Random, spec: CountdownSpec, difficulty: int = 0, max_tries: int = 1000) -> CountdownProblem:
    """A random solvable instance: draw numbers, combine random pairs with valid operations until
    one value is left, and keep it if it is a target in [1, max_target]."""
    for _ in range(max_tries):
        numbers = tuple(randint(rng, 1, spec.max_number) for _ in range(spec.num_numbers))
        built = _random_solution(rng, numbers, spec)
        if built is not None and 1 <= built[0] <= spec.max_target:
            target, expression, ops, steps = built
            question = (f"Using the numbers {', '.join(map(str, numbers))}, make {target}. "
                        "Use each number exactly once with + - * /.")
            return CountdownProblem(numbers, ops, target, steps, question, expression, difficulty)
    raise ValueError(f"no instance within max_target after {max_tries} tries for {spec}")


def _random_solution(rng: random.Random, numbers: tuple[int, ...], spec: CountdownSpec):
    """(value, expression, ops, steps) of one random way to combine all numbers, or None."""
    pool = [(n, str(n), 3) for n in numbers]  # (value, expression, precedence of its top operator)
    ops, steps = [], []
    while len(pool) > 1:
        i = randint(rng, 0, len(pool) - 1)
        a = pool.pop(i)
        b = pool.pop(randint(rng, 0, len(pool) - 1))
        if a[0] < b[0]:
            a, b = b, a  # larger first, so "-" stays positive and "/" can be exact
        valid = [op for op in "+-*/" if _valid(a[0], op, b[0], spec)]
        if not valid:
            return None
        op = valid[randint(rng, 0, len(valid) - 1)]
        value = {"+": a[0] + b[0], "-": a[0] - b[0], "*": a[0] * b[0], "/": a[0] // max(b[0], 1)}[op]
        ops.append(op)
        steps.append(f"{a[0]} {op} {b[0]} = {value}")
        pool.append((value, _join(a, op, b), _PRECEDENCE[op]))
    value, expression, _ = pool[0]
    return value, expression, tuple(ops), tuple(steps)


def _valid(a: int, op: str, b: int, spec: CountdownSpec) -> bool:
    if op == "+":
        return a + b <= spec.max_value
    if op == "-":
        return a > b
    if op == "*":
        return a * b <= spec.max_value and b > 1
    return b > 1 and a % b == 0


def _join(a: tuple, op: str, b: tuple) -> str:
    """``a op b`` with the fewest parentheses that keep its meaning."""
    p = _PRECEDENCE[op]
    left = f"({a[1]})" if a[2] < p else a[1]
    right = f"({b[1]})" if b[2] < p or (b[2] == p and op in "-/") else b[1]
    return f"{left} {op} {right}"


def _evaluate(node: ast.expr, used: list[int]) -> Fraction:
    """Exact value of an expression of non-negative integer literals and + - * /; records literals."""
    if isinstance(node, ast.Constant) and type(node.value) is int and node.value >= 0:
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _AST_OPS:
        left, right = _evaluate(node.left, used), _evaluate(node.right, used)
        op = _AST_OPS[type(node.op)]
        if op == "+":
            return left + right
        if op == "-":
            return left - right
        if op == "*":
            return left * right
        return left / right
    raise ValueError(f"not allowed in a Countdown answer: {ast.dump(node)[:60]}")
