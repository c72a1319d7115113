"""Prompt templates: R1-Zero verbatim from the paper, chat styles, safe substitution."""
import pytest

from r1jax.data import R1_ZERO, TEMPLATES, Template, chat_messages, get_template, render_prompt

PAPER = ("A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
         "The assistant first thinks about the reasoning process in the mind and then provides the user with "
         "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
         "</answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here "
         "</answer>. User: {prompt}. Assistant:")


def test_r1_zero_is_verbatim():
    assert R1_ZERO == PAPER
    assert render_prompt("What is 2+2?") == PAPER.replace("{prompt}", "What is 2+2?")
    assert render_prompt("x").endswith("User: x. Assistant:")


def test_braces_in_questions_survive():
    question = r"Compute $\frac{1}{2} + {x}$ and {prompt}"
    assert question in render_prompt(question, "r1_zero")
    assert question in render_prompt(question, "chat")


def test_chat_templates():
    text = render_prompt("Q?", "chat")
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n")
    assert "<think> </think>" in text and not get_template("chat").think_prefilled
    assert get_template("chatml_think").render("Q?").endswith("<|im_start|>assistant\n<think>\n")
    assert get_template("deepseek_r1").think_prefilled
    assert chat_messages("Q?")[-1] == {"role": "user", "content": "Q?"}
    assert chat_messages("Q?", system=None) == [{"role": "user", "content": "Q?"}]


def test_every_template_has_one_slot_and_errors_list_choices():
    assert all(t.render("QQQ").count("QQQ") == 1 for t in TEMPLATES.values())
    with pytest.raises(ValueError, match="choose from"):
        get_template("alpaca")
    with pytest.raises(ValueError, match="exactly once"):
        Template("broken", "no slot")
