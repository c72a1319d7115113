"""One tokenizer interface over sentencepiece ``.model`` files and Hugging Face ``tokenizer.json``.

``load_tokenizer(path)`` accepts either file or a directory holding one (with its
``tokenizer_config.json`` for the special tokens and the chat template, or a ``chat_template.jinja``
beside it); ``train_sentencepiece`` builds a small model from a text iterator for the tiny CPU runs.
Special tokens are never added implicitly: ``encode`` adds BOS/EOS only when asked, so templates
control exactly what the model sees. ``apply_chat_template`` renders a checkpoint's own Jinja chat
template the way ``transformers`` does (the ``tokenizer`` prompt template uses it).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterable, Mapping, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class PaddedBatch:
    """Token ids ``[B, L]`` (int32) and the mask of real tokens (1) versus padding (0)."""

    ids_BxL: np.ndarray
    mask_BxL: np.ndarray

    @property
    def lengths_B(self) -> np.ndarray:
        return self.mask_BxL.sum(axis=1)


class Tokenizer:
    """The interface every tokenizer implements; ``bos_id``/``eos_id`` may be None."""

    path: str
    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    pad_id: int
    chat_template: str | None = None  # a Jinja template (Hugging Face tokenizers only)
    special_tokens: Mapping[str, str] = {}  # bos_token, eos_token, pad_token as text

    def _encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def _decode(self, ids: list[int], skip_special: bool) -> str:
        raise NotImplementedError

    def token_to_id(self, token: str) -> int | None:
        raise NotImplementedError

    def id_to_token(self, token_id: int) -> str:
        raise NotImplementedError

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        ids = self._encode(text)
        if add_bos:
            ids = [self._require("bos_id")] + ids
        if add_eos:
            ids = ids + [self._require("eos_id")]
        return ids

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        return self._decode([int(i) for i in ids], skip_special)

    def encode_batch(self, texts: Sequence[str], *, add_bos: bool = False, add_eos: bool = False
                     ) -> list[list[int]]:
        return [self.encode(t, add_bos=add_bos, add_eos=add_eos) for t in texts]

    def pad(self, sequences: Sequence[Sequence[int]], *, side: str = "left",
            length: int | None = None, multiple_of: int = 1) -> PaddedBatch:
        """Pad to ``length`` (default: the longest, rounded up to ``multiple_of``).

        Left padding keeps the last prompt token of every row in the same column, which is what
        batched generation needs; right padding suits training targets.
        """
        if side not in ("left", "right"):
            raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
        longest = max((len(s) for s in sequences), default=0)
        if length is None:
            length = -(-max(longest, 1) // multiple_of) * multiple_of
        if longest > length:
            raise ValueError(f"a sequence of {longest} tokens does not fit padded length {length}")
        ids = np.full((len(sequences), length), self.pad_id, np.int32)
        mask = np.zeros((len(sequences), length), np.int32)
        for row, seq in enumerate(sequences):
            if not len(seq):
                continue
            cols = slice(length - len(seq), length) if side == "left" else slice(0, len(seq))
            ids[row, cols] = seq
            mask[row, cols] = 1
        return PaddedBatch(ids, mask)

    def batch_encode(self, texts: Sequence[str], *, side: str = "left", add_bos: bool = False,
                     add_eos: bool = False, length: int | None = None, multiple_of: int = 1
                     ) -> PaddedBatch:
        return self.pad(self.encode_batch(texts, add_bos=add_bos, add_eos=add_eos), side=side,
                        length=length, multiple_of=multiple_of)

    def apply_chat_template(self, messages: Sequence[dict], *, add_generation_prompt: bool = True
                            ) -> str:
        """``messages`` (role/content dicts) as text, by the checkpoint's own chat template, as
        ``transformers``' ``apply_chat_template(..., tokenize=False)`` renders them."""
        if not self.chat_template:
            raise ValueError(f"tokenizer {self.path} has no chat template (no 'chat_template' in "
                             "its tokenizer_config.json and no chat_template.jinja beside it)")
        return render_chat_template(self.chat_template, messages,
                                    add_generation_prompt=add_generation_prompt,
                                    **self.special_tokens)

    def _require(self, attr: str) -> int:
        value = getattr(self, attr)
        if value is None:
            raise ValueError(f"tokenizer {self.path} defines no {attr.removesuffix('_id')} token")
        return value


class SentencePieceTokenizer(Tokenizer):
    """A sentencepiece ``.model`` file."""

    def __init__(self, model_file: str):
        import sentencepiece as spm

        self.path = model_file
        self._sp = spm.SentencePieceProcessor(model_file=model_file)
        self.vocab_size = self._sp.get_piece_size()
        as_id = lambda i: None if i < 0 else int(i)  # noqa: E731  (sentencepiece uses -1 for none)
        self.bos_id, self.eos_id = as_id(self._sp.bos_id()), as_id(self._sp.eos_id())
        pad = as_id(self._sp.pad_id())
        self.pad_id = pad if pad is not None else (self.eos_id if self.eos_id is not None else 0)
        self._control = {i for i in range(self.vocab_size)
                         if self._sp.is_control(i) or self._sp.is_unknown(i)}

    def _encode(self, text):
        return list(self._sp.encode(text))

    def _decode(self, ids, skip_special):
        # A model's embedding may be larger than the vocabulary (padded for sharding); ids beyond
        # the vocabulary decode to nothing, as in Hugging Face tokenizers.
        ids = [i for i in ids if 0 <= i < self.vocab_size]
        if not skip_special:
            return "".join(self._sp.id_to_piece(i) if i in self._control else self._sp.decode([i])
                           for i in ids)
        return self._sp.decode([i for i in ids if i not in self._control])

    def token_to_id(self, token):
        i = self._sp.piece_to_id(token)
        return None if self._sp.is_unknown(i) and token != self._sp.id_to_piece(i) else int(i)

    def id_to_token(self, token_id):
        return self._sp.id_to_piece(int(token_id))


def _special_content(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


def render_chat_template(template: str, messages: Sequence[dict], *,
                         add_generation_prompt: bool = True, **special_tokens: str) -> str:
    """A Hugging Face chat template rendered as ``transformers`` renders it: a sandboxed Jinja
    environment with ``trim_blocks``/``lstrip_blocks``, loop controls, ``tojson``,
    ``raise_exception`` and ``strftime_now``; special tokens (``bos_token``…) as variables."""
    import datetime

    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, ensure_ascii=False,
                                                                    indent=indent)
    env.globals.update(raise_exception=raise_exception,
                       strftime_now=lambda fmt: datetime.datetime.now().strftime(fmt))
    return env.from_string(template).render(messages=list(messages), tools=None, documents=None,
                                            add_generation_prompt=add_generation_prompt,
                                            **special_tokens)


def _chat_template(config: dict, directory: str) -> str | None:
    """``tokenizer_config.json``'s ``chat_template`` (a string, or a list of named templates of
    which ``default`` is taken), else ``chat_template.jinja`` beside it (transformers ≥ 4.47)."""
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if template is None:
        path = os.path.join(directory, "chat_template.jinja")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                template = f.read()
    return template if isinstance(template, str) and template.strip() else None


class HFTokenizer(Tokenizer):
    """A Hugging Face ``tokenizer.json``; special tokens from the ``tokenizer_config.json`` beside it
    (or given explicitly)."""

    def __init__(self, tokenizer_file: str, *, bos: str | None = None, eos: str | None = None,
                 pad: str | None = None):
        from tokenizers import Tokenizer as RustTokenizer

        self.path = tokenizer_file
        self._tok = RustTokenizer.from_file(tokenizer_file)
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        config_path = os.path.join(os.path.dirname(tokenizer_file), "tokenizer_config.json")
        config = {}
        if os.path.isfile(config_path):
            with open(config_path, encoding="utf-8") as f:
                config = json.load(f)
        given = {"bos": bos, "eos": eos, "pad": pad}
        ids, self.special_tokens = {}, {}
        for kind, explicit in given.items():
            token = explicit or _special_content(config.get(f"{kind}_token"))
            if token is not None:
                self.special_tokens[f"{kind}_token"] = token
            ids[kind] = None if token is None else self._tok.token_to_id(token)
            if token is not None and ids[kind] is None:
                source = f"argument {kind}=" if explicit else f"{config_path}: {kind}_token"
                raise ValueError(f"{source} {token!r} is not in the vocabulary of {tokenizer_file}")
        self.bos_id, self.eos_id = ids["bos"], ids["eos"]
        self.pad_id = next(i for i in (ids["pad"], ids["eos"], 0) if i is not None)
        self.chat_template = _chat_template(config, os.path.dirname(tokenizer_file))
        self._special = {t.content for t in self._tok.get_added_tokens_decoder().values()
                         if t.special}

    def _encode(self, text):
        return self._tok.encode(text, add_special_tokens=False).ids

    def _decode(self, ids, skip_special):
        return self._tok.decode(ids, skip_special_tokens=skip_special)

    def token_to_id(self, token):
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id):
        return self._tok.id_to_token(int(token_id))


def _is_json(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    return head.startswith(b"{")


def load_tokenizer(path: str, **special_tokens) -> Tokenizer:
    """A tokenizer from a ``tokenizer.json``, a sentencepiece ``.model``, or a directory with one.

    ``special_tokens`` (``bos=``, ``eos=``, ``pad=``) override a ``tokenizer.json``'s config.
    """
    if os.path.isdir(path):
        candidates = [os.path.join(path, "tokenizer.json")] + sorted(
            os.path.join(path, f) for f in os.listdir(path) if f.endswith(".model"))
        found = [c for c in candidates if os.path.isfile(c)]
        if not found:
            raise FileNotFoundError(
                f"{path}: no tokenizer.json or sentencepiece *.model file in this directory")
        path = found[0]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer file {path!r} does not exist")
    if _is_json(path):
        try:
            return HFTokenizer(path, **special_tokens)
        except Exception as e:  # noqa: BLE001 — name the file whatever the parser raised
            raise ValueError(f"{path}: JSON but not a Hugging Face tokenizer.json ({e})") from None
    if special_tokens:
        raise ValueError(f"{path}: special-token overrides apply to tokenizer.json files only")
    try:
        return SentencePieceTokenizer(path)
    except Exception as e:  # noqa: BLE001
        raise ValueError(
            f"{path}: neither a Hugging Face tokenizer.json nor a sentencepiece model ({e})"
        ) from None


def train_sentencepiece(
    texts: Iterable[str],
    model_prefix: str,
    vocab_size: int,
    *,
    model_type: str = "bpe",
    user_defined_symbols: Sequence[str] = (),
    character_coverage: float = 1.0,
    split_digits: bool = False,
    max_sentence_length: int = 16_384,
) -> SentencePieceTokenizer:
    """Train a sentencepiece model on ``texts`` and return it (written to ``model_prefix.model``).

    Ids 0–3 are pad, unk, bos, eos. ``user_defined_symbols`` become single tokens wherever they
    appear (the tiny runs make every integer up to some bound one token). Training is
    single-threaded so that the same corpus always gives the same model.
    """
    import sentencepiece as spm

    os.makedirs(os.path.dirname(os.path.abspath(model_prefix)), exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_prefix=model_prefix,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        user_defined_symbols=list(user_defined_symbols),
        split_digits=split_digits,
        pad_id=0, unk_id=1, bos_id=2, eos_id=3,
        num_threads=1,
        max_sentence_length=max_sentence_length,
        minloglevel=2,
        hard_vocab_limit=True,
    )
    return SentencePieceTokenizer(model_prefix + ".model")
