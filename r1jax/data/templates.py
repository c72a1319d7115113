"""Prompt templates: the R1-Zero template verbatim from the DeepSeek-R1 paper, and chat styles for
instruct models. Selected by name in the config (``get_template``).

The question is substituted with ``str.replace``, never ``str.format``: math questions are full of
braces (``\\frac{1}{2}``).
"""
from __future__ import annotations

import dataclasses

PROMPT = "{prompt}"

# DeepSeek-R1 paper, Table 1, verbatim (including the period after the prompt).
R1_ZERO = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user "
    "with the answer. The reasoning process and answer are enclosed within <think> </think> and "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>. User: {prompt}. Assistant:"
)

# The same instructions as a system prompt, for chat models (the format reward expects the tags).
CHAT_SYSTEM = (
    "You are a helpful assistant. The assistant first thinks about the reasoning process in the mind "
    "and then provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process here "
    "</think> <answer> answer here </answer>."
)


@dataclasses.dataclass(frozen=True)
class Template:
    """Text with one ``{prompt}`` slot. ``think_prefilled``: the text ends with ``<think>``, so
    completions start inside the reasoning (tell the format reward via ``RewardConfig``)."""

    name: str
    text: str
    think_prefilled: bool = False

    def __post_init__(self):
        if self.text.count(PROMPT) != 1:
            raise ValueError(f"template {self.name!r} must contain {PROMPT} exactly once")

    def render(self, question: str) -> str:
        """The prompt text for ``question``, exactly what the model is given (no special tokens added)."""
        return self.text.replace(PROMPT, question)


def chatml(system: str | None = CHAT_SYSTEM, *, think_prefilled: bool = False, name: str = "chatml") -> Template:
    """A ChatML template (Qwen and many instruct models): optional system turn, user turn, open
    assistant turn — optionally already inside ``<think>``."""
    text = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    text += "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    if think_prefilled:
        text += "<think>\n"
    return Template(name, text, think_prefilled)


def chat_messages(question: str, system: str | None = CHAT_SYSTEM) -> list[dict[str, str]]:
    """The same conversation as role/content messages, for tokenizers that render their own."""
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": question}]


TEMPLATES: dict[str, Template] = {
    "r1_zero": Template("r1_zero", R1_ZERO),
    "chat": chatml(name="chat"),
    "chatml": chatml(),
    "chatml_think": chatml(think_prefilled=True, name="chatml_think"),
    # DeepSeek-R1 and its distilled models: no system prompt, and the reply opens with "<think>\n".
    "deepseek_r1": Template(
        "deepseek_r1",
        "<｜begin▁of▁sentence｜><｜User｜>{prompt}\nPlease reason step by step, and put your final "
        "answer within <answer> </answer> tags.<｜Assistant｜><think>\n",
        think_prefilled=True),
    "plain": Template("plain", PROMPT),
}


def get_template(name: str) -> Template:
    """The template registered as ``name``; the error lists the choices."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown prompt template {name!r}; choose from {sorted(TEMPLATES)}")
    return TEMPLATES[name]


def render_prompt(question: str, template: str = "r1_zero") -> str:
    """``question`` in the named template."""
    return get_template(template).render(question)
