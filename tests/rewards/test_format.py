"""The R1 format reward: tags once each, in order, nothing after </answer>."""
import pytest

from r1jax.rewards import check_format, format_reward


@pytest.mark.parametrize("completion", [
    "<think>reasoning</think><answer>42</answer>",
    " <think>\nreasoning\n</think>\n<answer>\n42\n</answer>\n",
    "<think>a < b and c > d</think> <answer>x</answer>",
])
def test_well_formed(completion):
    assert format_reward(completion) == 1.0


@pytest.mark.parametrize("completion, reason", [
    ("<answer>42</answer><think>r</think>", "order"),
    ("<think>r<answer>42</answer></think>", "order"),
    ("</think><think>r<answer>42</answer>", "order"),
    ("<think>r</think><answer>42</answer> trailing", "after"),
    ("<think>r</think> and so <answer>42</answer>", "between"),
    ("Sure! <think>r</think><answer>42</answer>", "before"),
    ("<think>r</think><answer>42", "</answer> appears 0"),
    ("<think>r</think>42</answer>", "<answer> appears 0"),
    ("<think>r</think><think>s</think><answer>42</answer>", "<think> appears 2"),
    ("<think>r</think><answer>4</answer><answer>2</answer>", "<answer> appears 2"),
    ("<think> </think><answer>42</answer>", "empty reasoning"),
    ("<think>r</think><answer>\n</answer>", "empty answer"),
    ("<THINK>r</THINK><ANSWER>42</ANSWER>", "appears 0"),
    ("", "appears 0"),
])
def test_malformed(completion, reason):
    check = check_format(completion)
    assert not check.ok and reason in check.reason
    assert format_reward(completion) == 0.0


def test_think_prefilled_prompt():
    completion = "reasoning</think><answer>42</answer>"
    assert format_reward(completion) == 0.0
    assert check_format(completion, think_prefilled=True).ok
    assert not check_format("<think>r</think><answer>42</answer>", think_prefilled=True).ok
