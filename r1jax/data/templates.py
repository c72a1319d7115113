"""Prompt templates: the R1-Zero template verbatim from the DeepSeek-R1 paper, and chat styles for
instruct models. Selected by name in the config (``get_template``).

``tokenizer`` (and ``tokenizer_think``, the reply opened inside ``<think>``) is the checkpoint's own
chat template — Llama 3's, Qwen's, DeepSeek's — rendered once around a placeholder question with
the ``CHAT_SYSTEM`` instructions; it needs the tokenizer (``get_template(name, tokenizer=tok)``).

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


# Prompt templates made from the tokenizer's own chat template: name -> reply opens in <think>.
TOKENIZER_TEMPLATES = {"tokenizer": False, "tokenizer_think": True}
_PLACEHOLDER = "\x00question\x00"


def from_tokenizer(tokenizer, *, system: str | None = CHAT_SYSTEM, think_prefilled: bool = False,
                   name: str = "tokenizer") -> Template:
    """The tokenizer's chat template around one user turn (after ``system``, when given), with the
    assistant's turn opened — inside ``<think>`` with ``think_prefilled``, or when the template
    itself opens it (DeepSeek-R1's distilled models)."""
    text = tokenizer.apply_chat_template(chat_messages(_PLACEHOLDER, system),
                                         add_generation_prompt=True)
    if text.count(_PLACEHOLDER) != 1 or PROMPT in text:
        raise ValueError(f"the chat template of {tokenizer.path} does not render the question "
                         "exactly once; use a named template instead")
    text = text.replace(_PLACEHOLDER, PROMPT)
    if think_prefilled and not text.rstrip().endswith("<think>"):
        text += "<think>\n"
    return Template(name, text, think_prefilled or text.rstrip().endswith("<think>"))


def get_template(name: str, tokenizer=None) -> Template:
    """The template registered as ``name``, or (``tokenizer``/``tokenizer_think``) the tokenizer's
    own chat template; the error lists the choices."""
    if name in TOKENIZER_TEMPLATES:
        if tokenizer is None:
            raise ValueError(f"prompt template {name!r} is the tokenizer's own chat template; "
                             "this job did not pass its tokenizer (get_template(name, tokenizer=))")
        return from_tokenizer(tokenizer, think_prefilled=TOKENIZER_TEMPLATES[name], name=name)
    if name not in TEMPLATES:
        raise ValueError(f"unknown prompt template {name!r}; choose from "
                         f"{sorted(TEMPLATES) + sorted(TOKENIZER_TEMPLATES)}")
    return TEMPLATES[name]


def render_prompt(question: str, template: str = "r1_zero", tokenizer=None) -> str:
    """``question`` in the named template."""
    return get_template(template, tokenizer).render(question)
