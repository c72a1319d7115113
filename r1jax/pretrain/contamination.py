"""Scanning corpus text for what must never be in it.

Two rules, checked on the text itself (not on how it was generated):

1. No R1-Zero material: not the template (nor any ``ngram``-word run of it), no document with
   both a ``think`` and an ``answer`` tag (the template's reply format), no tag name that merely
   contains one of those words, no ``User:`` / ``Assistant:`` turn. A lone ``<answer>`` or
   ``<think>`` tag is an ordinary tag, as on the web.
2. No held-out arithmetic problem: every chain of two or more linked equations in the text
   (``3 + 4 = 7 , 7 * 2 = 14`` → the problem ``3+4*2``), and every such contiguous sub-chain, and
   every question in the task's wording ("Start with 3, add 4, …"), must be in the train split.
   Single facts (``3 + 4 = 7``) are the atomic skill and may appear freely.
"""
from __future__ import annotations

import re
from typing import Iterable

from r1jax.data import arithmetic, synthetic
from r1jax.data.templates import R1_ZERO

_EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
_QUESTION_START = re.compile(r"(?:Start with|Begin with|Take|start) (\d+)")
_OP_PHRASE = re.compile(r"\s*[,.]?\s*(?:then )?(add|subtract|multiply by|divide by) (\d+)",
                        re.IGNORECASE)
_OP_SYMBOL = {"add": "+", "subtract": "-", "multiply by": "*", "divide by": "/"}
_TEMPLATE_TAG = re.compile(r"</?\s*([^<>\s]*(?:think|answer)[^<>]*)>", re.IGNORECASE)
_TURN = re.compile(r"\bUser:|\bAssistant:", re.IGNORECASE)


def chain_key(start: int, ops: Iterable[str], operands: Iterable[int]) -> str:
    """The canonical key of a chain, as ``r1jax.data.arithmetic.ArithmeticProblem.key``."""
    return f"arithmetic:{start}" + "".join(f"{op}{x}" for op, x in zip(ops, operands))


def equation_chains(text: str) -> list[tuple[int, tuple[str, ...], tuple[int, ...]]]:
    """Maximal runs of equations where each starts from the previous one's result."""
    chains, current = [], []
    for m in _EQUATION.finditer(text):
        a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
        if current and current[-1][3] != a:
            chains.append(current)
            current = []
        current.append((a, op, b, c))
    if current:
        chains.append(current)
    return [(run[0][0], tuple(e[1] for e in run), tuple(e[2] for e in run)) for run in chains]


def question_chains(text: str) -> list[tuple[int, tuple[str, ...], tuple[int, ...]]]:
    """Chains stated in words: "Start with 3, add 4, multiply by 2" (and the corpus's variants,
    e.g. the restatement "start 3 , add 4 , multiply by 2")."""
    found = []
    for m in _QUESTION_START.finditer(text):
        ops, operands, pos = [], [], m.end()
        while (op := _OP_PHRASE.match(text, pos)) is not None:
            ops.append(_OP_SYMBOL[op[1].lower()])
            operands.append(int(op[2]))
            pos = op.end()
        if ops:
            found.append((int(m[1]), tuple(ops), tuple(operands)))
    return found


def sub_chain_keys(start: int, ops: tuple[str, ...], operands: tuple[int, ...],
                   min_ops: int = 2) -> list[str]:
    """Keys of every contiguous sub-chain of at least ``min_ops`` operations."""
    values = [start]
    for op, x in zip(ops, operands):
        values.append(arithmetic.apply_op(values[-1], op, x))  # the task's own rule
    keys = []
    for i in range(len(ops)):
        for j in range(i + min_ops, len(ops) + 1):
            keys.append(chain_key(values[i], ops[i:j], operands[i:j]))
    return keys


def held_out_keys(text: str, test_fraction: float) -> list[str]:
    """Keys of test-split problems whose worked chain or question occurs in ``text``."""
    bad = []
    for start, ops, operands in equation_chains(text):
        bad += [k for k in sub_chain_keys(start, ops, operands)
                if synthetic.split_of(k, test_fraction) == "test"]
    for start, ops, operands in question_chains(text):
        try:
            keys = sub_chain_keys(start, ops, operands, min_ops=1)
        except ValueError:  # not a valid chain (e.g. inexact division): no problem of the task
            continue
        bad += [k for k in keys if synthetic.split_of(k, test_fraction) == "test"]
    return bad


def template_ngrams(n: int) -> set[str]:
    """Every run of ``n`` words of the R1-Zero template around its prompt slot."""
    out = set()
    for part in R1_ZERO.split("{prompt}"):
        tokens = part.split()
        out.update(" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    return out


def forbidden_spans(text: str, *, ngram: int = 6) -> list[str]:
    """R1-Zero material in ``text``: its reply format (think and answer tags together), tag names
    built around those words, User:/Assistant: turns, template n-grams."""
    tags = list(_TEMPLATE_TAG.finditer(text))
    found = [m[0] for m in tags if m[1].strip() not in ("think", "answer")]
    if {m[1].strip() for m in tags} >= {"think", "answer"}:
        found += [m[0] for m in tags]
    found += [m[0] for m in _TURN.finditer(text)]
    flat = " ".join(text.split())
    found += [g for g in template_ngrams(ngram) if g in flat]
    return found


def is_clean(text: str, test_fraction: float) -> bool:
    return not forbidden_spans(text) and not held_out_keys(text, test_fraction)
