"""A pretraining run's settings (``experiments/pretrain_tiny.py``), validated at start-up."""
from __future__ import annotations

import dataclasses
from typing import Mapping

from r1jax.models.config import PRESETS
from r1jax.pretrain.corpus import FAMILIES, CorpusConfig


@dataclasses.dataclass(frozen=True)
class CorpusSettings:
    """``CorpusConfig`` as it appears in a ConfigDict (``mix`` as a ``{family: weight}`` map)."""

    seed: int = 0
    difficulties: tuple[int, ...] = (1, 2, 3)
    difficulty_weights: tuple[float, ...] = (1.0, 3.0, 2.0)
    test_fraction: float = 0.1
    max_integer: int = 100
    mix: Mapping[str, float] = dataclasses.field(default_factory=lambda: dict(CorpusConfig().mix))
    tagged_arithmetic: float = 0.7
    brief_work: float = 0.2
    follow_rate: float = 0.4

    def build(self, tag_pieces: tuple[str, ...] = ()) -> CorpusConfig:
        unknown = set(self.mix) - set(FAMILIES)
        if unknown:
            raise ValueError(f"corpus.mix: unknown families {sorted(unknown)}; choose from "
                             f"{FAMILIES}")
        mix = tuple((name, float(self.mix[name])) for name in FAMILIES if name in self.mix)
        return CorpusConfig(self.seed, self.difficulties, self.difficulty_weights,
                            self.test_fraction, self.max_integer, mix, self.tagged_arithmetic,
                            self.brief_work, self.follow_rate, tag_pieces)


@dataclasses.dataclass(frozen=True)
class TokenizerSettings:
    """A sentencepiece BPE model trained on ``num_docs`` documents of the corpus' own stream,
    with every integer up to ``corpus.max_integer`` a single token."""

    vocab_size: int = 1024
    num_docs: int = 50_000


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """A preset of ``r1jax.models`` with field overrides; the vocabulary comes from the
    tokenizer."""

    preset: str = "tiny"
    overrides: Mapping[str, int | float | str | bool] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"model.preset {self.preset!r} is not one of {sorted(PRESETS)}")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """AdamW on packed rows of ``seq_len`` tokens, loss on every token; cosine decay to
    ``final_lr_fraction`` after a linear warmup. ``docs_per_chunk`` documents are generated,
    packed and shuffled together."""

    steps: int = 1600
    batch_size: int = 16
    seq_len: int = 256
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.01
    b2: float = 0.98
    max_grad_norm: float = 1.0
    docs_per_chunk: int = 4096
    log_every: int = 25
    eval_every: int = 400
    checkpoint_every: int = 200
    max_to_keep: int = 2

    def __post_init__(self):
        for name in ("steps", "batch_size", "docs_per_chunk", "log_every", "eval_every",
                     "checkpoint_every", "max_to_keep"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.seq_len < 32:
            raise ValueError(f"train.seq_len must be >= 32, got {self.seq_len}")
        if self.warmup_steps >= self.steps:
            raise ValueError(f"train.warmup_steps ({self.warmup_steps}) must be below train.steps "
                             f"({self.steps})")


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """What is measured at the end (and, smaller, every ``train.eval_every`` steps): held-out
    test problems of ``difficulties`` in a corpus-native prompt (latent skill) and under the
    R1-Zero template (pass@1, format rate, length) with ``num_samples`` samples at T=1."""

    difficulties: tuple[int, ...] = (2, 3)
    num_problems: int = 128
    num_samples: int = 4
    max_new_tokens: int = 96
    periodic_problems: int = 32


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    job: str
    seed: int = 0
    output_dir: str = ""  # where the checkpoint goes; "" → <workdir>/base
    corpus: CorpusSettings = CorpusSettings()
    tokenizer: TokenizerSettings = TokenizerSettings()
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()
    probe: ProbeSettings = ProbeSettings()

    def __post_init__(self):
        if self.job != "pretrain":
            raise ValueError(f"job must be 'pretrain' for a pretraining run, got {self.job!r}")
