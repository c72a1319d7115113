"""Judging hand-written completions, the summary metrics over them, and the records file."""
import json
import math
import shutil

import pytest

from r1jax.data import Problem, SyntheticConfig, problem_set
from r1jax.eval import EvalSettings, ProblemRecord, judge, read_records, summarize
from r1jax.eval.records import append_records

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="bubblewrap missing: apt-get install -y bubblewrap (.ci/run does)")
SETTINGS = EvalSettings(num_samples=3, pass_k=(1, 2, 3), max_new_tokens=16)


def _ok(answer):
    return f"<think>working</think> <answer>{answer}</answer>"


def _math_records():
    problems = [Problem("half", "What is one half?", answer="0.5"),
                Problem("seven", "What is 3 + 4?", answer="7"),
                Problem("bad-gold", "Unanswerable.", answer="\\weird{")]
    texts = [_ok("1/2"), _ok("\\frac{1}{2}"), "the answer is 3",       # 2 of 3; vote 1/2 (right)
             "<answer>5</answer>", _ok("5"), _ok("7"),                 # 1 of 3; vote 5 (wrong)
             _ok("1"), _ok("1"), _ok("2")]                             # gold unparseable: not judged
    lengths = [5, 6, 16, 4, 5, 5, 5, 5, 5]
    truncated = [False, False, True] + [False] * 6
    return judge(problems, texts, lengths, truncated, settings=SETTINGS, first_index=10)


def test_math_completions_are_judged_and_voted():
    half, seven, bad = _math_records()
    assert [s.correct for s in half.samples] == [True, True, False]
    assert [s.answer for s in half.samples] == ["1/2", "\\frac{1}{2}", None]
    assert [s.format_ok for s in half.samples] == [True, True, False]
    assert (half.vote_answer, half.vote_count, half.vote_correct) == ("1/2", 2, True)
    assert [s.correct for s in seven.samples] == [False, False, True]
    assert (seven.vote_answer, seven.vote_correct) == ("5", False)
    assert [s.correct for s in bad.samples] == [None] * 3 and bad.vote_correct is None
    assert [s.format_ok for s in bad.samples] == [True] * 3  # format is judged all the same
    assert (half.index, bad.index, half.kind, half.gold) == (10, 12, "math", "0.5")
    assert half.samples[2].truncated and half.samples[2].length == 16


def test_summary_metrics():
    metrics = summarize(_math_records(), SETTINGS)
    assert metrics["pass@1"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert metrics["pass@2"] == pytest.approx((1.0 + 2 / 3) / 2)  # seven: 1 - C(2,2)/C(3,2)
    assert metrics["pass@3"] == 1.0
    assert metrics["cons@3"] == 0.5
    assert metrics["format_rate"] == pytest.approx(7 / 9)
    assert metrics["mean_length"] == pytest.approx(56 / 9) and metrics["max_length"] == 16
    assert metrics["truncation_rate"] == pytest.approx(1 / 9)
    assert (metrics["unjudged_samples"], metrics["unjudged_problems"]) == (3, 1)
    assert (metrics["num_problems"], metrics["num_samples"]) == (3, 9)
    empty = summarize([], SETTINGS)
    assert math.isnan(empty["pass@1"]) and empty["num_problems"] == 0


def test_verifier_problems_and_no_vote_without_answers():
    (problem,) = problem_set(SyntheticConfig(task="arithmetic", difficulty=2, num_examples=1, split="test"))
    settings = EvalSettings(num_samples=2, max_new_tokens=8)
    record, = judge([problem], [_ok(problem.answer), _ok("-1")], [3, 3], [False, False], settings=settings)
    assert [s.correct for s in record.samples] == [True, False] and record.kind == "verifier"
    none, = judge([problem], ["no", "answer"], [1, 1], [True, True], settings=settings)
    assert (none.vote_answer, none.vote_count, none.vote_correct) == ("", 0, False)
    no_cons = EvalSettings(num_samples=2, cons=False)
    unvoted, = judge([problem], ["a", "b"], [1, 1], [True, True], settings=no_cons)
    assert unvoted.vote_answer is None and "cons@2" not in summarize([unvoted], no_cons)


@needs_bwrap
def test_code_completions_run_in_the_sandbox():
    problem = Problem("add", "Read two integers and print their sum.",
                      tests=({"stdin": "1 2\n", "stdout": "3\n"}, {"stdin": "5 5\n", "stdout": "10\n"}))
    right = ("<think>sum</think><answer>```python\na, b = map(int, input().split())\nprint(a + b)\n```"
             "</answer>")
    wrong = right.replace("a + b", "a - b")
    record, = judge([problem], [right, wrong], [20, 20], [False, False],
                    settings=EvalSettings(num_samples=2))
    assert [s.correct for s in record.samples] == [True, False]
    assert record.samples[0].answer.startswith("a, b = map") and record.vote_answer is None


def test_judge_checks_the_number_of_completions():
    with pytest.raises(ValueError, match="need 6 completions"):
        judge([Problem("a", "q", answer="1")] * 2, ["x"] * 5, [1] * 5, [False] * 5,
              settings=EvalSettings(num_samples=3))


def test_records_round_trip_and_a_torn_last_line_is_cut(tmp_path):
    records = _math_records()
    path = str(tmp_path / "samples.jsonl")
    append_records(path, records[:2], SETTINGS.pass_k)
    line = json.loads(open(path).readline())
    assert line["pass_at_k"] == {"1": pytest.approx(2 / 3), "2": 1.0, "3": 1.0}
    assert (line["num_judged"], line["num_correct"]) == (3, 2)
    assert [ProblemRecord.from_json(json.loads(s)) for s in open(path)] == records[:2]
    with open(path, "a") as f:  # what a kill in the middle of a write leaves
        f.write(json.dumps(records[2].to_json())[:40])
    assert read_records(path) == records[:2]
    assert open(path).read().count("\n") == 2 and not open(path).read().endswith("\n")
    assert read_records(path, repair=True) == records[:2] and open(path).read().endswith("\n")
    append_records(path, records[2:], SETTINGS.pass_k)
    assert read_records(path) == records
    with open(path, "a") as f:
        f.write('{"not": "a record"}\n')
    with pytest.raises(ValueError, match=r"samples.jsonl:4: not a problem record"):
        read_records(path)
