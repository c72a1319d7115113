"""Score completions with a trained reward model (the ``preference`` reward of GRPO).

DeepSeek-R1's helpfulness reward judges only the final summary: a completion with an
``<answer>`` is scored on that answer, one without on its whole text.
"""
from __future__ import annotations

import functools
import os
from typing import Sequence

import jax
import numpy as np
from safetensors.numpy import load_file

from r1jax import hf
from r1jax.rewards.extract import answer_text
from r1jax.rm.encode import encode_texts
from r1jax.rm.model import scores
from r1jax.rm.train import HEAD_FILE
from r1jax.sharding import Sharding
from r1jax.tokenizer import load_tokenizer


class RewardModelScorer:
    """A reward model exported by ``r1jax.rm.train`` (backbone + ``reward_head.safetensors``)."""

    def __init__(self, path: str, *, sharding: Sharding | None = None, max_tokens: int = 512,
                 batch_size: int = 64):
        head_path = os.path.join(path, HEAD_FILE)
        if not os.path.isfile(head_path):
            raise FileNotFoundError(f"{head_path}: not a reward model export (no {HEAD_FILE})")
        self.model_cfg, backbone = hf.load_pretrained(
            path, mesh=None if sharding is None else sharding.mesh)
        head = load_file(head_path)
        self.params = {"backbone": backbone, "head": {"w": head["w"], "b": head["b"]}}
        self.tokenizer = load_tokenizer(path)
        self.max_tokens, self.batch_size = max_tokens, batch_size
        self._scores = jax.jit(functools.partial(scores, self.model_cfg, sharding=sharding))

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        """One float per completion (its answer's reward when it has one)."""
        responses = [answer_text(c) or c for c in completions]
        out = []
        for start in range(0, len(prompts), self.batch_size):
            ids, mask = encode_texts(self.tokenizer, prompts[start:start + self.batch_size],
                                     responses[start:start + self.batch_size], self.max_tokens)
            out.append(np.asarray(self._scores(self.params, ids, mask)))
        return np.concatenate(out) if out else np.zeros((0,), np.float32)
