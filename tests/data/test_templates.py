"""Prompt templates: R1-Zero verbatim from the paper, chat styles, safe substitution, and a
checkpoint's own chat template."""
import json

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


CHATML_JINJA = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
                "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
LLAMA3_JINJA = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + "
                "message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + "
                "'<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
                "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")


def _hf_tokenizer(tmp_path, chat_template, *, as_file=False):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from r1jax.tokenizer import load_tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>",
                "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok.train_from_iterator(["system user assistant Q? think"] * 3, trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, show_progress=False))
    tok.save(str(tmp_path / "tokenizer.json"))
    config = {"eos_token": "<|endoftext|>", "bos_token": "<|begin_of_text|>"}
    if as_file:
        (tmp_path / "chat_template.jinja").write_text(chat_template)
    elif chat_template is not None:
        config["chat_template"] = chat_template
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    return load_tokenizer(str(tmp_path))


def test_the_tokenizers_own_chat_template(tmp_path):
    tok = _hf_tokenizer(tmp_path, CHATML_JINJA)
    # Qwen's ChatML through its own template is the named chatml template, character for character.
    assert get_template("tokenizer", tok).text == get_template("chatml").text
    assert get_template("tokenizer_think", tok).text == get_template("chatml_think").text
    assert get_template("tokenizer_think", tok).think_prefilled
    assert render_prompt(r"\frac{1}{2}?", "tokenizer", tok).count(r"\frac{1}{2}?") == 1


def test_a_llama3_template_from_a_jinja_file(tmp_path):
    tok = _hf_tokenizer(tmp_path, LLAMA3_JINJA, as_file=True)
    text = get_template("tokenizer", tok).render("Q?")
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert text.endswith("<|start_header_id|>user<|end_header_id|>\n\nQ?<|eot_id|>"
                         "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_tokenizer_templates_need_the_tokenizer_and_its_template(tmp_path):
    with pytest.raises(ValueError, match="did not pass its tokenizer"):
        get_template("tokenizer")
    with pytest.raises(ValueError, match="has no chat template"):
        get_template("tokenizer", _hf_tokenizer(tmp_path, None))
    with pytest.raises(ValueError, match="tokenizer_think"):
        get_template("alpaca")
