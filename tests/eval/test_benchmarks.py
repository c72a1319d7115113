"""The benchmark table (paper defaults), the readers of each format, and the settings built on them."""
import json
import shutil

import pytest

from r1jax.data import DataError
from r1jax.eval import BENCHMARKS, EvalSettings, load_benchmark
from r1jax.eval.benchmarks import gpqa_record, livecodebench_record
from r1jax.rewards import RewardConfig, RewardInput, score


def test_defaults_follow_the_paper():
    aime = EvalSettings.for_benchmark("aime")
    assert (aime.num_samples, aime.temperature, aime.top_p, aime.max_new_tokens) == (64, 0.6, 0.95, 32_768)
    assert aime.pass_k == (1, 64) and aime.cons
    assert EvalSettings.for_benchmark("math500").num_samples == 16
    assert EvalSettings.for_benchmark("gpqa").num_samples == 64
    assert EvalSettings.for_benchmark("livecodebench").num_samples == 8
    humaneval = EvalSettings.for_benchmark("humaneval")
    assert humaneval.pass_k == (1, 8) and not humaneval.cons  # answers are programs: no vote
    for bench in BENCHMARKS.values():  # batch_size × k rows per generate call stays at 64 or less
        assert bench.batch_size * bench.num_samples <= 64 or bench.source == "synthetic"


def test_overrides_and_validation():
    s = EvalSettings.for_benchmark("aime", num_samples=4, max_new_tokens=16, temperature=None)
    assert (s.num_samples, s.pass_k, s.max_new_tokens, s.temperature) == (4, (1, 4), 16, 0.6)
    assert EvalSettings.for_benchmark("aime", num_samples=8, pass_k=(2, 1, 2)).pass_k == (1, 2)
    with pytest.raises(ValueError, match=r"pass_k \[16\] must lie in \[1, num_samples=8\]"):
        EvalSettings(num_samples=8, pass_k=(1, 16))
    with pytest.raises(ValueError, match="EvalSettings.top_p"):
        EvalSettings(top_p=0.0)
    with pytest.raises(ValueError, match="EvalSettings.num_samples"):
        EvalSettings(num_samples=0)
    with pytest.raises(ValueError, match="unknown prompt template"):
        EvalSettings(template="nope")
    with pytest.raises(ValueError, match="has no field"):
        EvalSettings.for_benchmark("aime", k=3)
    with pytest.raises(ValueError, match="unknown benchmark 'aime25'"):
        EvalSettings.for_benchmark("aime25")


def test_judge_config_counts_accuracy_and_reports_format():
    judge = EvalSettings(template="chatml_think").judge_config
    assert judge.weights == (("accuracy", 1.0), ("format", 0.0)) and judge.think_prefilled
    assert not EvalSettings().judge_config.think_prefilled


def test_each_jsonl_format(jsonl_files):
    gsm8k = load_benchmark("gsm8k", data=str(jsonl_files["gsm8k"]))
    assert [p.answer for p in gsm8k] == ["7", "24", "1,000"]
    math500 = load_benchmark("math500", data=str(jsonl_files["math500"]), num_problems=2)
    assert [p.id for p in math500] == ["test/algebra/1.json", "test/prealgebra/2.json"]
    aime = load_benchmark("aime", data=str(jsonl_files["aime"]))
    assert [(p.id, p.answer) for p in aime] == [("2024-I-1", "24"), ("2024-I-2", "033"), ("2024-I-3", "6")]
    with pytest.raises(ValueError, match="set data=PATH"):
        load_benchmark("aime")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_benchmark("aime", data="/nonexistent/aime.jsonl")


def test_synthetic_and_humaneval():
    countdown = load_benchmark("countdown", num_problems=5)
    assert len(countdown) == 5 and all(p.kind == "verifier" for p in countdown)
    assert countdown[0].id.startswith("synthetic:countdown:d2:test")
    assert len(load_benchmark("arithmetic")) == BENCHMARKS["arithmetic"].default_num_problems
    humaneval = load_benchmark("humaneval", num_problems=2)
    assert [p.id for p in humaneval] == ["HumanEval/0", "HumanEval/1"] and humaneval[0].kind == "code"


GPQA_ROW = {"Record ID": "rec42", "Question": "Which is a noble gas?", "Correct Answer": "Neon",
            "Incorrect Answer 1": "Nitrogen", "Incorrect Answer 2": "Sodium", "Incorrect Answer 3": "Iron"}


def test_gpqa_rows_become_lettered_choices(tmp_path):
    converted = gpqa_record(GPQA_ROW)
    assert converted == gpqa_record(dict(GPQA_ROW))  # the shuffle is a function of the row id
    letter = converted["answer"]
    assert f"{letter}) Neon" in converted["question"] and converted["id"] == "rec42"
    assert sorted(line[0] for line in converted["question"].splitlines() if line[1:3] == ") ") == list("ABCD")
    plain = {"question": "Pick: A) 1 B) 2", "answer": "B"}
    assert gpqa_record(plain) is plain
    path = tmp_path / "gpqa.jsonl"
    path.write_text(json.dumps(GPQA_ROW) + "\n" + json.dumps(plain) + "\n")
    problems = load_benchmark("gpqa", data=str(path))
    assert [p.answer for p in problems] == [letter, "B"]
    with pytest.raises(DataError, match="Incorrect Answer 3"):
        gpqa_record({**GPQA_ROW, "Incorrect Answer 3": ""})


def test_livecodebench_rows_become_code_problems(tmp_path):
    stdin_row = {"question_id": "abc001_a", "question_content": "Print the sum of two integers.",
                 "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
                 "private_test_cases": json.dumps([{"input": "5 5\n", "output": "10\n", "testtype": "stdin"}]),
                 "starter_code": "", "metadata": "{}"}
    leetcode_row = {"question_id": "2999", "question_content": "Return the sum of nums.",
                    "public_test_cases": json.dumps([{"input": "[1, 2]\n3", "output": "6",
                                                      "testtype": "functional"}]),
                    "private_test_cases": "", "starter_code": "class Solution:\n    def f(self, nums, x):",
                    "metadata": json.dumps({"func_name": "f"})}
    path = tmp_path / "lcb.jsonl"
    path.write_text(json.dumps(stdin_row) + "\n" + json.dumps(leetcode_row) + "\n")
    first, second = load_benchmark("livecodebench", data=str(path))
    assert first.tests == ({"stdin": "1 2\n", "stdout": "3\n"}, {"stdin": "5 5\n", "stdout": "10\n"})
    assert second.tests == ({"call": "candidate().f([1, 2], 3)", "expected": "6"},)
    assert second.entry_point == "Solution" and "starter code" in second.question
    with pytest.raises(DataError, match="never unpickles"):
        livecodebench_record({**stdin_row, "private_test_cases": "eJzLSM3JyQcABiwCFQ=="})
    if shutil.which("bwrap"):  # a LeetCode-style solution passes its converted test in the sandbox
        solution = ("<think>t</think><answer>```python\nclass Solution:\n    def f(self, nums: List[int], "
                    "x: int) -> int:\n        return sum(nums) + x\n```</answer>")
        for program, expected in ((solution, 1.0), (solution.replace("+ x", "- x"), 0.0)):
            verdict = score(RewardInput.from_problem(second, program), RewardConfig())
            assert verdict.components["accuracy"] == expected
