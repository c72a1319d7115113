"""JSONL prompt sets: GSM8K / MATH-500 / AIME / code conventions, and every kind of bad line."""
import json

import pytest

from r1jax.data import DataError, JsonlConfig, load_jsonl


def _write(path, lines):
    path.write_bytes(b"".join((l if isinstance(l, bytes) else (l if isinstance(l, str) else json.dumps(l)).encode()) + b"\n"
                              for l in lines))
    return path


def test_gsm8k_answers_are_what_follows_the_marker(tmp_path):
    path = _write(tmp_path / "gsm8k.jsonl", [
        {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
        {"question": "Big?", "answer": "It is 1,000.\n#### 1,000"},
    ])
    problems = load_jsonl(path)
    assert [p.answer for p in problems] == ["7", "1,000"]
    assert problems[0].id == "gsm8k.jsonl:1" and problems[0].source.endswith("gsm8k.jsonl:1")
    assert problems[0].kind == "math" and problems.skipped == ()


def test_math500_and_aime_fields(tmp_path):
    math500 = _write(tmp_path / "math500.jsonl", [
        {"problem": r"What is $\frac{1}{2}+\frac{1}{4}$?", "solution": "...", "answer": r"\frac{3}{4}",
         "subject": "Algebra", "level": 1, "unique_id": "test/algebra/1.json"}])
    (p,) = load_jsonl(math500)
    assert (p.id, p.question[:7], p.answer) == ("test/algebra/1.json", "What is", r"\frac{3}{4}")
    aime = _write(tmp_path / "aime.jsonl", [{"ID": "2024-I-1", "Problem": "Find x.", "Answer": 204},
                                            {"id": 7, "problem": "Find y.", "answer": "033", "language": "en"}])
    first, second = load_jsonl(aime)
    assert (first.id, first.answer) == ("2024-I-1", "204")
    assert (second.id, second.answer, second.language) == ("7", "033", "en")


def test_code_lines_carry_tests(tmp_path):
    path = _write(tmp_path / "code.jsonl", [
        {"prompt": "Add two numbers read from stdin.", "tests": [{"stdin": "1 2\n", "stdout": "3\n"}]},
        {"question": "Write f.", "entry_point": "f", "tests": [{"call": "candidate(1)", "expected": "2"}]},
        {"question": "APPS style.", "tests": {"inputs": ["1\n"], "outputs": ["1\n"]}},
    ])
    problems = load_jsonl(path)
    assert [p.kind for p in problems] == ["code"] * 3
    assert problems[1].entry_point == "f"
    assert problems[2].tests == ({"stdin": "1\n", "stdout": "1\n"},)


def test_field_overrides_and_default_language(tmp_path):
    path = _write(tmp_path / "custom.jsonl", [{"q": "Why?", "gold": "42", "key": "a"}])
    (p,) = load_jsonl(path, JsonlConfig(question_field="q", answer_field="gold", id_field="key",
                                        default_language="zh"))
    assert (p.id, p.question, p.answer, p.language) == ("a", "Why?", "42", "zh")


@pytest.mark.parametrize("line, message", [
    ('{"question": "x", "answer": ', ":2: invalid JSON"),
    (b'{"question": "caf\xe9", "answer": "1"}', ":2: not valid UTF-8"),
    ('["question", "answer"]', ":2: expected a JSON object, got list"),
    ('{"answer": "1"}', ":2 field 'question': no question field"),
    ('{"question": "  ", "answer": "1"}', ":2 field 'question': is empty"),
    ('{"question": "x"}', ":2 field 'answer': no answer field"),
    ('{"question": "x", "answer": ""}', ":2 field 'answer': is empty"),
    ('{"question": "x", "answer": "steps\\n#### "}', "is empty after '####'"),
    ('{"question": "x", "answer": null}', "field 'answer': must be a string or number"),
    ('{"question": "x", "answer": true}', "field 'answer': must be a string or number"),
    ('{"question": 3, "answer": "1"}', "field 'question': must be a string"),
    ('{"question": "x", "answer": "1", "language": 5}', "field 'language'"),
    ('{"question": "x", "tests": []}', "field 'tests': must be a non-empty list"),
    ('{"question": "x", "tests": [{"stdin": "1"}]}', "field 'tests[0].stdout': must be a string"),
    ('{"question": "x", "tests": [{"output": "1"}]}', "field 'tests[0]': needs exactly one of"),
    ('{"question": "x", "tests": [{"call": "candidate(1)"}]}', "field 'entry_point'"),
])
def test_bad_line_names_file_line_and_field(tmp_path, line, message):
    path = _write(tmp_path / "bad.jsonl", [{"question": "fine", "answer": "1"}, line])
    with pytest.raises(DataError) as info:
        load_jsonl(path)
    assert str(path) in str(info.value) and message in str(info.value)
    assert info.value.line == 2


def test_skipping_counts_bad_lines(tmp_path):
    path = _write(tmp_path / "mixed.jsonl", [
        {"question": "a", "answer": "1"}, "not json", "", {"question": "b", "answer": ""},
        {"question": "c", "answer": "3"}])
    problems = load_jsonl(path, JsonlConfig(skip_bad_lines=True))
    assert [p.answer for p in problems] == ["1", "3"]
    assert [s.line for s in problems.skipped] == [2, 4]
    assert "invalid JSON" in problems.skipped[0].reason
    with pytest.raises(DataError, match="2 of 4 lines are bad"):
        load_jsonl(path, JsonlConfig(skip_bad_lines=True, max_bad_fraction=0.25))


def test_empty_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no records"):
        load_jsonl(_write(tmp_path / "empty.jsonl", [""]))


def test_math_solutions_give_their_last_boxed_answer(tmp_path):
    path = _write(tmp_path / "math.jsonl", [
        {"problem": "Simplify $\\frac{2}{4}$.", "solution": "We get $\\boxed{\\frac{1}{2}}$, so "
         "$\\boxed{\\frac{1}{2}}$.", "level": "Level 1", "type": "Algebra"},
        {"problem": "Both?", "solution": "\\boxed{no}", "answer": "3"},  # an answer field wins
        {"prompt": "Compute 6 times 7.", "answer": "42"},
        {"question": "Add code.", "solution": "def f(): pass", "entry_point": "f",
         "tests": [{"assert": "assert f() is None"}]},  # a code line's solution is not a gold
    ])
    problems = load_jsonl(path)
    assert [p.answer for p in problems] == ["\\frac{1}{2}", "3", "42", ""]
    assert [p.kind for p in problems] == ["math", "math", "math", "code"]


@pytest.mark.parametrize("line, message", [
    ({"problem": "x", "solution": "It is 4."}, ":2 field 'solution': has no non-empty \\boxed{...}"),
    ({"problem": "x", "solution": "\\boxed{}"}, ":2 field 'solution': has no non-empty"),
    ({"problem": "x", "solution": 4}, ":2 field 'solution': must be a string"),
    ({"prompt": "x", "general": "yes"}, ":2 field 'general': must be true or false"),
])
def test_bad_solution_and_general_lines_are_named(tmp_path, line, message):
    path = _write(tmp_path / "bad.jsonl", [{"question": "fine", "answer": "1"}, line])
    with pytest.raises(DataError) as info:
        load_jsonl(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_general_prompts_need_no_answer(tmp_path):
    path = _write(tmp_path / "general.jsonl", [
        {"question": "Write a haiku about the sea.", "general": True, "response": "..."},
        {"prompt": "Say hi.", "general": False, "answer": "hi"}])
    general, judged = load_jsonl(path)
    assert (general.kind, general.answer, judged.kind) == ("general", "", "math")
