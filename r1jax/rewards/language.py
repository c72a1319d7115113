"""Language consistency (DeepSeek-R1 §2.3.2): the share of the CoT's words in the target language.

R1 adds this reward because R1-Zero's chains of thought mixed languages. Languages are told apart
by script, which separates English from Chinese (the case the paper names) and from Cyrillic,
Greek, Arabic, Hebrew, Devanagari, Thai, Japanese kana and Korean Hangul — but not English from
French: both are Latin script.

Counting rules, chosen so math does not count for or against any language:
* a word is a maximal run of letters of one script; each Han character is its own word, because
  Chinese writes no spaces;
* digits, punctuation, symbols and LaTeX commands (``\\frac``) are not words;
* a single Latin letter is not a word (it is almost always a variable such as ``x``).
"""
from __future__ import annotations

import re
import unicodedata

# Script of a letter, by Unicode block. Order matters only for readability.
_SCRIPT_RANGES = (
    ("latin", 0x0041, 0x024F), ("latin", 0x1E00, 0x1EFF),
    ("greek", 0x0370, 0x03FF), ("cyrillic", 0x0400, 0x052F),
    ("hebrew", 0x0590, 0x05FF), ("arabic", 0x0600, 0x06FF), ("devanagari", 0x0900, 0x097F),
    ("thai", 0x0E00, 0x0E7F), ("hangul", 0x1100, 0x11FF), ("hangul", 0x3130, 0x318F),
    ("hangul", 0xAC00, 0xD7AF), ("hiragana", 0x3040, 0x309F), ("katakana", 0x30A0, 0x30FF),
    ("han", 0x3400, 0x4DBF), ("han", 0x4E00, 0x9FFF), ("han", 0xF900, 0xFAFF),
    ("han", 0x20000, 0x2FA1F), ("latin", 0xFF21, 0xFF5A),
)
LANGUAGE_SCRIPTS = {
    "en": frozenset({"latin"}), "fr": frozenset({"latin"}), "de": frozenset({"latin"}),
    "es": frozenset({"latin"}), "zh": frozenset({"han"}), "ja": frozenset({"han", "hiragana", "katakana"}),
    "ko": frozenset({"hangul"}), "ru": frozenset({"cyrillic"}), "el": frozenset({"greek"}),
    "ar": frozenset({"arabic"}), "he": frozenset({"hebrew"}), "hi": frozenset({"devanagari"}),
    "th": frozenset({"thai"}),
}
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_LETTER_RUN = re.compile(r"[^\W\d_]+")


def language_consistency(text: str, language: str) -> float:
    """The fraction of words in ``text`` written in ``language``'s script, in [0, 1].

    ``language`` is an ISO 639-1 code from ``LANGUAGE_SCRIPTS`` (``"en"``, ``"zh"``, …) or a script
    name (``"latin"``, ``"han"``, …). Text without words scores 0.0: a CoT made only of symbols has
    no language to be consistent in, and rewarding it would invite the policy to drop words.
    """
    target = _target_scripts(language)
    scripts = word_scripts(text)
    if not scripts:
        return 0.0
    return sum(script in target for script in scripts) / len(scripts)


def word_scripts(text: str) -> list[str]:
    """The script of every word in ``text`` (see the module docstring for what a word is)."""
    text = _LATEX_COMMAND.sub(" ", text)
    scripts: list[str] = []
    for run in _LETTER_RUN.findall(text):
        current, length = None, 0
        for ch in run:
            script = _script(ch)
            if script == "han":
                _close_word(scripts, current, length)
                scripts.append("han")
                current, length = None, 0
            elif script == current:
                length += 1
            else:
                _close_word(scripts, current, length)
                current, length = script, 1
        _close_word(scripts, current, length)
    return scripts


def _close_word(scripts: list[str], script: str | None, length: int) -> None:
    if script is None or (script == "latin" and length == 1):
        return
    scripts.append(script)


def _script(ch: str) -> str:
    code = ord(ch)
    for name, low, high in _SCRIPT_RANGES:
        if low <= code <= high:
            return name
    # Letters outside the table (e.g. Georgian) still count as words, in a script of their own.
    return "other:" + unicodedata.name(ch, "unknown").split(" ")[0].lower()


def _target_scripts(language: str) -> frozenset[str]:
    key = language.strip().lower()
    if key in LANGUAGE_SCRIPTS:
        return LANGUAGE_SCRIPTS[key]
    all_scripts = {name for name, _, _ in _SCRIPT_RANGES}
    if key in all_scripts:
        return frozenset({key})
    raise ValueError(
        f"unknown language {language!r}: use one of {sorted(LANGUAGE_SCRIPTS)} or a script name "
        f"from {sorted(all_scripts)}")
