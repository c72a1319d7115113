"""math_accuracy: tricky equivalences, mismatches, and None (never 1.0) for an unparseable gold."""
import threading

import pytest

from r1jax.rewards import math_accuracy, parse_gold


def _answer(text: str) -> str:
    return f"<think>work</think> <answer>{text}</answer>"


@pytest.mark.parametrize("predicted, gold", [
    ("0.5", r"\frac{1}{2}"),
    (r"\frac12", "0.5"),
    (r"\frac{1}{2}", "1/2"),
    ("1/2", "0.5"),
    ("1,000", "1000"),
    ("1000", "1,000"),
    (r"10\text{ cm}", "10"),
    ("10", r"10\text{ cm}"),
    ("x = 5", "5"),
    (r"\dfrac{10}{2}", "5"),
    (r"\frac{\sqrt2}{2}", r"\sqrt{2}/2"),
    ("[1,3)", "[1, 3)"),
    (r"(1, 3]", r"(1,3]"),
    (r"\{2,1\}", r"\{1,2\}"),
    ("1+x^2", "x^2+1"),
    ("3.14159265358979", r"\pi"),
    (r"$\frac{3}{4}$", "0.75"),
    (r"The answer is \boxed{72}", "72"),
])
def test_equivalent_answers_score_one(predicted, gold):
    assert math_accuracy(_answer(predicted), gold) == 1.0


@pytest.mark.parametrize("predicted, gold", [
    ("3", "4"),
    ("0.49", r"\frac12"),
    ("1001", "1,000"),
    ("[1,3]", "[1,3)"),
    ("(1,3]", "[1,3)"),
    ("4 or 5", "5"),        # hedging: read as the set {4, 5}, not "the last number"
    ("5, 6", "6"),
    ("-5", "5"),
    (r"\{1,2,3\}", r"\{1,2\}"),
    ("x^2-1", "x^2+1"),
])
def test_mismatches_score_zero(predicted, gold):
    assert math_accuracy(_answer(predicted), gold) == 0.0


def test_boxed_without_answer_tags_is_read():
    assert math_accuracy(r"so the total is \boxed{\frac{1}{2}}.", "0.5") == 1.0


def test_boxed_inside_answer_tags_is_preferred():
    assert math_accuracy(r"<answer>Thus \boxed{7}, not 8</answer>", "7") == 1.0


def test_last_answer_block_counts():
    assert math_accuracy("<answer>3</answer> wait <answer>4</answer>", "4") == 1.0
    assert math_accuracy("<answer>4</answer> wait <answer>3</answer>", "4") == 0.0


@pytest.mark.parametrize("completion", ["no final answer here, 42", "<answer></answer>", "<answer>  </answer>",
                                        "<think>42</think>", ""])
def test_no_committed_answer_scores_zero(completion):
    assert math_accuracy(completion, "42") == 0.0


@pytest.mark.parametrize("gold", ["", "   ", r"\frac{", "$$", "\\"])
def test_unparseable_gold_is_none_never_one(gold):
    assert parse_gold(gold) is None
    for completion in (_answer("1"), _answer(gold), "", _answer(r"\frac{")):
        assert math_accuracy(completion, gold) is None


def test_works_off_the_main_thread():
    # math-verify's own timeouts need the main thread; elsewhere they must be switched off, not crash.
    results = []
    thread = threading.Thread(target=lambda: results.append(math_accuracy(_answer(r"\frac12"), "0.5")))
    thread.start()
    thread.join()
    assert results == [1.0]
