"""The tiny base model: a synthetic corpus, its tokenizer, and a short deterministic pretraining.

* ``corpus`` — documents that teach arithmetic (facts, worked chains, direct results) and generic
  in-context format following, never the R1-Zero template or its think/answer dialogue;
* ``contamination`` — the scan that proves it (and that held-out problems never occur);
* ``probe`` — latent skill and R1-Zero-template behaviour of a base model;
* ``run(config, workdir)`` — the ``job = "pretrain"`` entry point (``experiments/pretrain_tiny.py``).
"""
from r1jax.pretrain.config import PretrainConfig
from r1jax.pretrain.corpus import CorpusConfig
from r1jax.pretrain.run import run

__all__ = ["CorpusConfig", "PretrainConfig", "run"]
