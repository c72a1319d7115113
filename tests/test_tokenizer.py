"""Tokenizers: the one interface checked against the `tokenizers` and `sentencepiece` libraries."""
import json

import numpy as np
import pytest
import sentencepiece as spm
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from r1jax.tokenizer import HFTokenizer, SentencePieceTokenizer, load_tokenizer, train_sentencepiece

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Compute 12 + 7 = 19, then 19 * 3 = 57.",
    "A conversation between User and Assistant.",
    "数学 问题 很 有趣",
    "def add(a, b):\n    return a + b",
] * 20
TEXTS = ["Compute 12 + 7 = 19.", "the lazy fox", "问题 有趣", "", "  spaces  and\ttabs\n"]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_tok")
    tok = RustTokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<|begin|>", "<|end|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|begin|>", "eos_token": {"content": "<|end|>"}, "pad_token": "<|pad|>"}))
    return path


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("sp") / "tok"
    return train_sentencepiece(CORPUS, str(prefix), vocab_size=120,
                               user_defined_symbols=["<think>", "</think>", "19", "57"])


def test_hf_tokenizer_matches_the_tokenizers_library(hf_dir):
    ours = load_tokenizer(str(hf_dir))
    assert isinstance(ours, HFTokenizer)
    ref = RustTokenizer.from_file(str(hf_dir / "tokenizer.json"))
    for text in TEXTS:
        ids = ref.encode(text, add_special_tokens=False).ids
        assert ours.encode(text) == ids
        assert ours.decode(ids) == ref.decode(ids) == text
    assert (ours.bos_id, ours.eos_id, ours.pad_id) == tuple(
        ref.token_to_id(t) for t in ("<|begin|>", "<|end|>", "<|pad|>"))
    assert ours.vocab_size == ref.get_vocab_size()


def test_special_tokens_only_when_asked_and_skipped_on_decode(hf_dir):
    tok = load_tokenizer(str(hf_dir / "tokenizer.json"))
    ids = tok.encode("the fox", add_bos=True, add_eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.encode("the fox") == ids[1:-1]
    assert tok.decode(ids) == "the fox"
    assert tok.decode(ids, skip_special=False) == "<|begin|>the fox<|end|>"


def test_sentencepiece_matches_the_sentencepiece_library(sp_model):
    ref = spm.SentencePieceProcessor(model_file=sp_model.path)
    for text in TEXTS:
        assert sp_model.encode(text) == ref.encode(text)
        assert sp_model.decode(ref.encode(text)) == ref.decode(ref.encode(text))
    assert (sp_model.pad_id, sp_model.bos_id, sp_model.eos_id) == (0, 2, 3)
    assert (ref.pad_id(), ref.bos_id(), ref.eos_id()) == (0, 2, 3)
    assert sp_model.vocab_size == ref.get_piece_size() == 120
    # User-defined symbols are single tokens wherever they appear.
    for symbol in ("<think>", "19"):
        assert sp_model.encode(f"x{symbol}y").count(sp_model.token_to_id(symbol)) == 1
    assert sp_model.decode(sp_model.encode("fox") + [sp_model.vocab_size + 5]) == "fox"
    ids = sp_model.encode("hi", add_bos=True, add_eos=True)
    assert sp_model.decode(ids) == "hi"
    assert sp_model.decode(ids, skip_special=False) == "<s>hi</s>"


def test_sentencepiece_training_is_deterministic(tmp_path, sp_model):
    again = train_sentencepiece(CORPUS, str(tmp_path / "again"), vocab_size=120,
                                user_defined_symbols=["<think>", "</think>", "19", "57"])
    # Compare what was learned (the file also records the output path, which differs).
    a, b = (spm.SentencePieceProcessor(model_file=t.path) for t in (again, sp_model))
    pieces = lambda p: [(p.id_to_piece(i), p.get_score(i)) for i in range(p.get_piece_size())]  # noqa: E731
    assert pieces(a) == pieces(b)


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_padding(hf_dir, side):
    tok = load_tokenizer(str(hf_dir))
    texts = ["Compute 12 + 7 = 19.", "fox", ""]
    batch = tok.batch_encode(texts, side=side, multiple_of=8)
    rows = [tok.encode(t) for t in texts]
    assert batch.ids_BxL.shape == (3, -(-max(map(len, rows)) // 8) * 8)
    assert batch.ids_BxL.dtype == np.int32
    np.testing.assert_array_equal(batch.lengths_B, [len(r) for r in rows])
    for row, ids in enumerate(rows):
        real = batch.ids_BxL[row][batch.mask_BxL[row] == 1]
        assert real.tolist() == ids
        assert (batch.ids_BxL[row][batch.mask_BxL[row] == 0] == tok.pad_id).all()
        if ids:  # the padding sits on the requested side
            edge = batch.mask_BxL[row, -1] if side == "left" else batch.mask_BxL[row, 0]
            assert edge == 1
    with pytest.raises(ValueError, match="does not fit"):
        tok.batch_encode(texts, length=2)


def test_unreadable_files_are_named(tmp_path):
    garbage = tmp_path / "weird.model"
    garbage.write_bytes(b"\x00\x01not a model")
    with pytest.raises(ValueError, match="weird.model: neither"):
        load_tokenizer(str(garbage))
    bad_json = tmp_path / "tokenizer.json"
    bad_json.write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="tokenizer.json: JSON but not"):
        load_tokenizer(str(bad_json))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_tokenizer(str(empty))


def test_special_token_missing_from_vocab_is_an_error(hf_dir):
    with pytest.raises(ValueError, match="argument eos= '<nope>' is not in the vocabulary"):
        HFTokenizer(str(hf_dir / "tokenizer.json"), eos="<nope>")


def test_sentencepiece_class_accepts_model_path(sp_model):
    assert SentencePieceTokenizer(sp_model.path).encode("fox") == sp_model.encode("fox")
