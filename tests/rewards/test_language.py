"""Language consistency: share of target-language words in the CoT, math ignored."""
import pytest

from r1jax.rewards import language_consistency
from r1jax.rewards.language import word_scripts


def test_pure_english_and_pure_chinese():
    assert language_consistency("First add the numbers, then divide.", "en") == 1.0
    assert language_consistency("First add the numbers, then divide.", "zh") == 0.0
    assert language_consistency("首先把两个数相加", "zh") == 1.0
    assert language_consistency("首先把两个数相加", "en") == 0.0


def test_mixed_text_is_the_word_fraction():
    # words: "the", "answer", "is", 因, 此 -> 3 English of 5
    assert language_consistency("the answer is 因此", "en") == pytest.approx(3 / 5)
    assert language_consistency("the answer is 因此", "zh") == pytest.approx(2 / 5)


def test_math_does_not_count():
    assert word_scripts(r"x = \frac{3}{4} + y^2 = 12.5, so 2x + 1 = 7") == ["latin"]  # only "so"
    assert language_consistency(r"因为 \frac{a}{b} = 3, x + y = 1", "zh") == 1.0


def test_scripts_split_inside_a_run():
    assert word_scripts("abc中文def") == ["latin", "han", "han", "latin"]
    assert word_scripts("Привет world") == ["cyrillic", "latin"]


def test_no_words_scores_zero():
    assert language_consistency("", "en") == 0.0
    assert language_consistency("1 + 2 = 3", "en") == 0.0


def test_languages_and_script_names():
    assert language_consistency("こんにちは 世界", "ja") == 1.0
    assert language_consistency("안녕하세요", "ko") == 1.0
    assert language_consistency("Привет мир", "ru") == 1.0
    assert language_consistency("hello there", "latin") == 1.0
    assert language_consistency("hello there", "EN") == 1.0
    with pytest.raises(ValueError, match="unknown language 'klingon'"):
        language_consistency("hello", "klingon")
