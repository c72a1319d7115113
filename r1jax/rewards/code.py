"""Code accuracy: run a proposed program against test cases in the sandbox, judge outside it.

Exit code 0 proves nothing (``os._exit(0)`` before the asserts exits 0), and anything the program
can see it can imitate. So the expected results never enter the sandbox: the program's *outputs*
are brought out and compared here.

Test cases are plain JSON objects (what a JSONL prompt set holds under ``tests``):

* ``{"stdin": "1 2\\n", "stdout": "3\\n"}`` — run the program with that input; pass when its output
  matches (trailing whitespace per line and trailing blank lines ignored) and it exits 0.
* ``{"call": "candidate(1, 2)", "expected": "3"}`` — evaluate the expression inside with
  ``candidate`` bound to the task's entry point; the value comes out as a Python literal built only
  from exact builtin types (so an object whose ``__eq__`` always says True cannot pass) and is
  compared here with ``expected`` (a Python literal). ``"compare"`` may be ``"eq"`` (default),
  ``"close"`` (with ``"tol"``), ``"truthy"`` or ``"falsy"`` (no ``expected``).
* ``{"assert": "for x in range(3): assert candidate(x, 0) == x"}`` — statements that must run
  without raising. Weaker: the verdict is formed inside the sandbox, so a program that reads the
  harness could forge it. Dataset converters use it only for checks they cannot split into calls.

All ``call``/``assert`` cases of a task share one sandbox run, each under its own alarm;
``stdin`` cases run one sandbox each.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import math
import re
import secrets
from typing import Any, Mapping, Sequence

from r1jax.rewards import sandbox
from r1jax.rewards.extract import extract_code

_COMPARES = ("eq", "close", "truthy", "falsy")


@dataclasses.dataclass(frozen=True)
class StdioCase:
    stdin: str
    stdout: str


@dataclasses.dataclass(frozen=True)
class CallCase:
    call: str
    expected: str | None = None
    compare: str = "eq"
    tol: float = 1e-6


@dataclasses.dataclass(frozen=True)
class AssertCase:
    source: str


TestCase = StdioCase | CallCase | AssertCase


@dataclasses.dataclass(frozen=True)
class CodeTask:
    """What a program is judged against.

    ``prefix`` is code the completion continues or redefines (HumanEval's prompt: imports, helper
    functions and the entry point's signature); ``setup`` runs after the program and before the
    cases (a test file's module-level helpers).
    """

    tests: tuple[TestCase, ...]
    entry_point: str | None = None
    prefix: str = ""
    setup: str = ""

    def __post_init__(self):
        if not self.tests:
            raise ValueError("CodeTask needs at least one test case")
        if self.entry_point is None and any(not isinstance(t, StdioCase) for t in self.tests):
            raise ValueError("call/assert test cases need CodeTask.entry_point")


@dataclasses.dataclass(frozen=True)
class CodeScore:
    """Test cases passed out of total; ``infra_error`` set means the sandbox failed, not the code."""

    passed: int
    total: int
    infra_error: str | None = None
    timed_out: bool = False


def parse_tests(raw: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> tuple[TestCase, ...]:
    """Test cases from their JSON form (see the module docstring); also accepts the APPS-style
    ``{"inputs": [...], "outputs": [...]}``. Raises ValueError naming the bad case and field."""
    if isinstance(raw, Mapping):
        if set(raw) >= {"inputs", "outputs"}:
            inputs, outputs = raw["inputs"], raw["outputs"]
            if len(inputs) != len(outputs):
                raise ValueError(f"tests: {len(inputs)} inputs but {len(outputs)} outputs")
            raw = [{"stdin": i, "stdout": o} for i, o in zip(inputs, outputs)]
        else:
            raise ValueError(f"tests must be a list of cases or {{inputs, outputs}}, got keys {sorted(raw)}")
    return tuple(_parse_case(i, case) for i, case in enumerate(raw))


def _parse_case(index: int, case: Any) -> TestCase:
    where = f"tests[{index}]"
    if not isinstance(case, Mapping):
        raise ValueError(f"{where} must be an object, got {type(case).__name__}")
    kinds = [k for k in ("stdin", "call", "assert") if k in case]
    if len(kinds) != 1:
        raise ValueError(f"{where} must have exactly one of 'stdin', 'call', 'assert'; got keys {sorted(case)}")
    kind = kinds[0]
    for key in {"stdin": ("stdin", "stdout"), "call": ("call",), "assert": ("assert",)}[kind]:
        if not isinstance(case.get(key), str):
            raise ValueError(f"{where}.{key} must be a string")
    if kind == "stdin":
        return StdioCase(case["stdin"], case["stdout"])
    if kind == "assert":
        _check_syntax(case["assert"], "exec", f"{where}.assert")
        return AssertCase(case["assert"])
    compare = case.get("compare", "eq")
    if compare not in _COMPARES:
        raise ValueError(f"{where}.compare must be one of {_COMPARES}, got {compare!r}")
    _check_syntax(case["call"], "eval", f"{where}.call")
    expected = case.get("expected")
    if compare in ("eq", "close"):
        if not isinstance(expected, str):
            raise ValueError(f"{where}.expected must be a Python literal as a string")
        try:
            value = ast.literal_eval(expected)
        except (ValueError, SyntaxError) as e:
            raise ValueError(f"{where}.expected is not a Python literal: {expected!r}") from e
        if compare == "close" and not _is_number(value):
            raise ValueError(f"{where}.expected must be a number for compare='close'")
    tol = float(case.get("tol", 1e-6))
    return CallCase(case["call"], expected, compare, tol)


def code_accuracy(completion: str, task: CodeTask, *, timeout_s: float = 5.0,
                  partial_credit: bool = False,
                  config: sandbox.SandboxConfig = sandbox.SandboxConfig()) -> float | None:
    """1.0 if the completion's program passes every test case (or the fraction passed, with
    ``partial_credit``), 0.0 if not or if it proposes no program, None on a sandbox failure."""
    code = extract_code(completion)
    if code is None:
        return 0.0
    score = run_tests(assemble_program(code, task), task, timeout_s=timeout_s, config=config,
                      stop_on_failure=not partial_credit)
    if score.infra_error is not None:
        return None
    if partial_credit:
        return score.passed / score.total
    return 1.0 if score.passed == score.total else 0.0


def assemble_program(code: str, task: CodeTask) -> str:
    """The program to run: the task's prefix followed by the proposed code.

    Code that defines the entry point replaces the prefix's stub (a function whose body is only its
    docstring is valid Python, so the prefix still runs and supplies imports and helpers); code that
    does not is taken as the continuation of the prefix (an indented function body).
    """
    if not task.prefix:
        return code
    defines = re.compile(rf"^\s*(?:async\s+)?def\s+{re.escape(task.entry_point or '')}\s*\(", re.MULTILINE)
    if task.entry_point and defines.search(code):
        return task.prefix.rstrip("\n") + "\n\n" + code
    return task.prefix + code


def run_tests(program: str, task: CodeTask, *, timeout_s: float = 5.0,
              config: sandbox.SandboxConfig = sandbox.SandboxConfig(),
              stop_on_failure: bool = False) -> CodeScore:
    """Runs ``program`` against every case of ``task``; ``timeout_s`` bounds each sandbox run.

    ``stop_on_failure`` skips the remaining sandbox runs once a case has failed (all-or-nothing
    scoring needs no more); the skipped cases count as not passed.
    """
    passed, timed_out = 0, False
    stdio = [t for t in task.tests if isinstance(t, StdioCase)]
    for case in stdio:
        run = sandbox.run_python(program, stdin=case.stdin, timeout_s=timeout_s, config=config)
        if run.infra_error is not None:
            return CodeScore(0, len(task.tests), run.infra_error)
        timed_out |= run.timed_out
        ok = run.exit_code == 0 and _normalize(run.stdout) == _normalize(case.stdout)
        passed += ok
        if stop_on_failure and not ok:
            return CodeScore(passed, len(task.tests), None, timed_out)
    in_process = [t for t in task.tests if not isinstance(t, StdioCase)]
    if in_process:
        nonce, pass_token = secrets.token_hex(16), secrets.token_hex(16)
        files = {"solution.py": program, "setup.py": task.setup,
                 "cases.json": json.dumps([_case_json(c) for c in in_process])}
        harness = _harness_source(nonce, pass_token, task.entry_point, timeout_s / max(1, len(in_process)))
        run = sandbox.run_python(harness, timeout_s=timeout_s, files=files, config=config)
        if run.infra_error is not None:
            return CodeScore(0, len(task.tests), run.infra_error)
        timed_out |= run.timed_out
        records = _records(run.stdout, nonce)
        for index, case in enumerate(in_process):
            got = records.get(index)
            passed += got is not None and _case_passed(case, got, pass_token)
    return CodeScore(passed, len(task.tests), None, timed_out)


def _case_json(case: CallCase | AssertCase) -> dict[str, str]:
    # Only what must run inside goes in: never the expected value.
    if isinstance(case, CallCase):
        return {"call": case.call}
    return {"assert": case.source}


def _records(stdout: str, nonce: str) -> dict[int, tuple[str, str]]:
    """Harness records by case index; a case reported twice counts as not reported."""
    found: dict[int, list[tuple[str, str]]] = {}
    prefix = nonce + " "
    for line in stdout.splitlines():
        if not line.startswith(prefix):
            continue
        try:
            index, status, payload = json.loads(line[len(prefix):])
        except (ValueError, TypeError):
            continue
        if isinstance(index, int) and isinstance(status, str) and isinstance(payload, str):
            found.setdefault(index, []).append((status, payload))
    return {i: recs[0] for i, recs in found.items() if len(recs) == 1}


def _case_passed(case: CallCase | AssertCase, record: tuple[str, str], pass_token: str) -> bool:
    status, payload = record
    if status != "ok":
        return False
    if isinstance(case, AssertCase):
        return payload == pass_token
    try:
        value = ast.literal_eval(payload)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return False
    if case.compare == "truthy":
        return bool(value)
    if case.compare == "falsy":
        return not value
    expected = ast.literal_eval(case.expected)
    if case.compare == "close":
        return _is_number(value) and math.isfinite(abs(value - expected)) and abs(value - expected) <= case.tol
    try:
        return bool(value == expected)
    except RecursionError:
        return False


def _normalize(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()).rstrip()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, complex)) and not isinstance(value, bool)


def _check_syntax(source: str, mode: str, where: str) -> None:
    try:
        compile(source, where, mode)
    except SyntaxError as e:
        raise ValueError(f"{where} is not valid Python: {e.msg}") from e


def _harness_source(nonce: str, pass_token: str, entry_point: str | None, case_timeout_s: float) -> str:
    """The program run in the sandbox for call/assert cases (see ``_HARNESS``)."""
    return (_HARNESS.replace("@NONCE@", nonce).replace("@PASS@", pass_token)
            .replace("@ENTRY@", repr(entry_point)).replace("@CASE_TIMEOUT@", repr(max(case_timeout_s, 0.05))))


# Runs inside the sandbox. Everything it relies on is bound before the untrusted program runs, and
# values leave only through _encode, which accepts exact builtin types (no subclasses, so no custom
# __eq__/__repr__) and builds the literal itself.
_HARNESS = r'''
import json as _json, os as _os, signal as _signal

import traceback as _traceback

def _main(_write=_os.write, _dumps=_json.dumps, _type=type, _builtins=__builtins__,
          _print_exc=_traceback.print_exc):
    nonce, pass_token, entry = "@NONCE@", "@PASS@", @ENTRY@

    def emit(index, status, payload):
        _write(1, ("\n" + nonce + " " + _dumps([index, status, payload]) + "\n").encode())

    def encode(value, depth=0):
        if depth > 50:
            raise ValueError("too deep")
        t = _type(value)
        if value is None or t is bool or t is int or t is str or t is bytes or t is complex:
            return t.__repr__(value)
        if t is float:
            text = float.__repr__(value)
            if text in ("nan", "inf", "-inf"):
                raise ValueError("non-finite float")
            return text
        if t is list or t is tuple:
            items = [encode(v, depth + 1) for v in value]
            if t is tuple:
                return "(" + "".join(i + ", " for i in items) + ")"
            return "[" + ", ".join(items) + "]"
        if t is set or t is frozenset:
            items = [encode(v, depth + 1) for v in value]
            return "{" + ", ".join(items) + "}" if items else "set()"
        if t is dict:
            return "{" + ", ".join(encode(k, depth + 1) + ": " + encode(v, depth + 1)
                                   for k, v in dict.items(value)) + "}"
        raise TypeError("cannot report a value of type " + t.__name__)

    class CaseTimeout(BaseException):
        pass

    def on_alarm(signum, frame):
        raise CaseTimeout()

    with open("/sandbox/cases.json") as f:
        cases = _json.load(f)
    with open("/sandbox/solution.py") as f:
        solution = f.read()
    with open("/sandbox/setup.py") as f:
        setup = f.read()
    namespace = {"__name__": "__solution__", "__builtins__": _builtins}
    try:
        exec(compile(solution, "solution.py", "exec"), namespace)
        exec(compile(setup, "test_setup.py", "exec"), namespace)
        namespace["candidate"] = namespace[entry]
    except BaseException as e:
        _print_exc()
        emit(-1, "load_error", _type(e).__name__)
        return
    for index, case in enumerate(cases):
        _signal.signal(_signal.SIGALRM, on_alarm)
        _signal.setitimer(_signal.ITIMER_REAL, @CASE_TIMEOUT@)
        try:
            if "call" in case:
                value = eval(compile(case["call"], "case" + str(index), "eval"), namespace)
                _signal.setitimer(_signal.ITIMER_REAL, 0)
                emit(index, "ok", encode(value))
            else:
                exec(compile(case["assert"], "case" + str(index), "exec"), namespace)
                _signal.setitimer(_signal.ITIMER_REAL, 0)
                emit(index, "ok", pass_token)
        except CaseTimeout:
            emit(index, "timeout", "")
        except BaseException as e:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
            _print_exc()
            emit(index, "error", _type(e).__name__)

_main()
'''
