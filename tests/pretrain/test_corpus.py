"""The pretraining corpus: never the R1-Zero template or its dialogue, never a held-out problem;
deterministic; and the scanner that proves it catches what it should."""
import re

import pytest

from r1jax.data import R1_ZERO, render_prompt, synthetic
from r1jax.pretrain import contamination, corpus

CFG = corpus.CorpusConfig()


@pytest.fixture(scope="module")
def docs():
    return corpus.chunk(CFG, 0, 3000) + corpus.chunk(CFG, 0, 1000, stream="tokenizer")


def test_corpus_never_shows_the_r1_zero_template_reply_format_or_dialogue(docs):
    text = "\n".join(docs)
    for needle in ("User:", "Assistant:"):
        assert needle not in text, needle
    for doc in docs:  # a lone <think> or <answer> is an ordinary tag; both together never
        assert not ("<think>" in doc and "<answer>" in doc), doc
    flat = " ".join(text.split())
    for sentence in re.split(r"(?<=[.:])\s", R1_ZERO.replace("{prompt}", "")):
        if len(sentence.split()) >= 4:
            assert sentence.strip() not in flat, sentence
    assert not [s for d in docs for s in contamination.forbidden_spans(d)]
    # It does teach tags in general, and the template's words exist elsewhere.
    assert sum("</" in d for d in docs) > len(docs) // 5
    for word in ("conversation", "reasoning", "process", "answer", "respectively", "assistant"):
        assert word in text, word


def test_corpus_holds_no_held_out_problem(docs):
    assert not [k for d in docs for k in contamination.held_out_keys(d, CFG.test_fraction)]
    text = "\n".join(docs)
    for difficulty in (2, 3):
        for problem in synthetic.generate(synthetic.SyntheticConfig(
                difficulty=difficulty, split="test", num_examples=100, unique=True)):
            assert problem.question not in text
            assert " , ".join(problem.steps) not in text


def test_corpus_teaches_the_skill_in_several_formats(docs):
    text = "\n".join(docs)
    assert text.count("Problem: Start with") > 50 and "Result:" in text
    assert len(contamination.equation_chains(text)) > 1000
    direct = [d for d in docs if d.startswith("Problem:") and "Work:" not in d]
    assert direct, "some documents give the result without steps"


def test_scanner_catches_contamination():
    problem = synthetic.generate(synthetic.SyntheticConfig(difficulty=3, split="test",
                                                           num_examples=1))[0]
    worked = f"Problem: {problem.question} Work: {' , '.join(problem.steps)} Result: {problem.answer}"
    assert problem.key in contamination.held_out_keys(worked, 0.1)
    assert contamination.held_out_keys(problem.question, 0.1)
    assert not contamination.is_clean(worked, 0.1)
    assert not contamination.forbidden_spans("Tutor: <think> 3 + 4 = 7 </think>")
    assert contamination.forbidden_spans("Tutor: <think> 3 + 4 = 7 </think> <answer> 7 </answer>")
    assert contamination.forbidden_spans("<final> 7 </final> ... <answer> 7 </answer> <think>")
    assert contamination.forbidden_spans("<thinking> 3 + 4 = 7 </thinking>")
    assert contamination.forbidden_spans("x User: hi")
    assert contamination.forbidden_spans(render_prompt("What is 2 + 2?"))


def test_chunks_are_deterministic_and_distinct():
    assert corpus.chunk(CFG, 3, 50) == corpus.chunk(CFG, 3, 50)
    assert corpus.chunk(CFG, 3, 50) != corpus.chunk(CFG, 4, 50)


def test_bad_corpus_config_names_the_field():
    with pytest.raises(ValueError, match="max_integer"):
        corpus.CorpusConfig(difficulties=(4,), difficulty_weights=(1.0,), max_integer=100)
    with pytest.raises(ValueError, match="unknown families"):
        corpus.CorpusConfig(mix=(("poems", 1.0),))


def test_tag_names_built_from_pieces_never_spell_the_template_roles_or_tags():
    # Pieces that can spell "think", "answer", "user" and "assistant" when joined.
    pieces = ("th", "ink", "in", "k", "an", "swer", "us", "er", "ass", "ist", "ant", "zo")
    cfg = corpus.CorpusConfig(tag_pieces=pieces, mix=(("tagged", 1.0),))
    docs = corpus.chunk(cfg, 0, 600)
    assert not [s for d in docs for s in contamination.forbidden_spans(d)]
    tags = {t for d in docs for t in re.findall(r"<(\w+)>", d)}
    assert any(t.startswith(("th", "an", "swer", "ink")) for t in tags)  # pieces are used
    assert not [t for t in tags if any(r in t for r in ("user", "assistant"))]
    # "think" and "answer" only as whole names (the pools hold them), never inside another name.
    assert not [t for t in tags if t not in ("think", "answer") and ("think" in t or "answer" in t)]
    assert {"think", "answer"} <= tags
