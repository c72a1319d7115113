"""Sample → decode → score: the one way a job turns prompts into judged completions.

GRPO's rollouts, evaluation, rejection sampling and the base-model probe all describe what to
sample with one ``SamplingRequest`` and call ``complete``: the prompts go to
``r1jax.rollout.generate`` (G samples each, row ``p·G + g`` being sample g of prompt p), the
completions are decoded to text on the host, and — given a ``RewardConfig`` — judged against their
problems by the rewards package (in a ``RewardPool`` of worker processes; code in the sandbox).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np

from r1jax import distributed, rollout
from r1jax.data import Problem, Template
from r1jax.rewards import (BatchResult, BatchScores, RewardConfig, RewardInput, RewardPool,
                           batch_metrics, score)
from r1jax.sampling_request import SamplingRequest
from r1jax.tokenizer import Tokenizer

__all__ = ["Completions", "SamplingRequest", "complete", "decode_completions", "encode_prompts",
           "judge"]

@dataclasses.dataclass(frozen=True)
class Completions:
    """``rollout`` (device arrays, ``[P·G, T]``), each row's text (its tokens up to and including
    the stop, special tokens dropped), and ``scores`` when a reward config was given."""

    rollout: rollout.Rollout
    texts: list[str]
    lengths_B: np.ndarray
    stopped_B: np.ndarray
    scores: BatchScores | None = None

    @property
    def truncated_B(self) -> np.ndarray:
        return ~self.stopped_B


def encode_prompts(tokenizer: Tokenizer, template: Template, problems: Sequence[Problem], *,
                   max_tokens: int | None = None, add_bos: bool = False) -> list[list[int]]:
    """Each problem's question in the template, as token ids."""
    prompts = []
    for problem in problems:
        ids = tokenizer.encode(template.render(problem.question), add_bos=add_bos)
        if max_tokens is not None and len(ids) > max_tokens:
            raise ValueError(
                f"problem {problem.id!r}: its prompt is {len(ids)} tokens, more than "
                f"data.max_prompt_tokens = {max_tokens}; raise it or shorten the question")
        prompts.append(ids)
    return prompts


def complete(params: Any, model_cfg, tokenizer: Tokenizer, prompts: Sequence[Sequence[int]],
             request: SamplingRequest, *, group_size: int, rng: jax.Array,
             problems: Sequence[Problem] | None = None, reward_config: RewardConfig | None = None,
             pool: RewardPool | None = None, reward_model=None, sharding=None,
             record_experts: bool = False) -> Completions:
    """``group_size`` completions of every prompt, decoded, and — given ``reward_config`` —
    judged against ``problems`` (one per prompt); see ``judge`` for ``reward_model``.
    ``record_experts``: the rollout keeps every token's expert choices (router replay)."""
    out = rollout.generate(
        params, model_cfg, prompts, rng=rng, max_new_tokens=request.max_new_tokens,
        group_size=group_size, temperature=request.temperature, top_p=request.top_p,
        top_k=request.top_k, stop_ids=request.stop_ids(tokenizer),
        stop_strings=request.stop_strings, tokenizer=tokenizer, pad_id=tokenizer.pad_id,
        sharding=sharding, record_experts=record_experts, **request.engine.generate_kwargs())
    completions = decode_completions(out, tokenizer)
    if reward_config is None:
        return completions
    return judge(completions, problems, reward_config, pool, reward_model=reward_model)


def decode_completions(out: rollout.Rollout, tokenizer: Tokenizer) -> Completions:
    """Each row's text; each process decodes its share of the rows, every process gets all."""
    tokens_BxT = distributed.to_host(out.tokens)
    lengths_B = distributed.to_host(out.lengths)
    mine = range(tokens_BxT.shape[0])[distributed.host_rows(tokens_BxT.shape[0])]
    texts = distributed.allgather([tokenizer.decode(tokens_BxT[row, :lengths_B[row]].tolist())
                                   for row in mine])
    return Completions(out, texts, lengths_B, distributed.to_host(out.stopped))


def judge(completions: Completions, problems: Sequence[Problem], reward_config: RewardConfig,
          pool: RewardPool | None, *, reward_model=None) -> Completions:
    """``completions`` with their ``scores``: row ``p·G + g`` against problem p. Completions of
    general prompts (no checkable answer) are first scored by ``reward_model`` (an
    ``r1jax.rm.RewardModelScorer``), which becomes their ``preference`` component."""
    if problems is None:
        raise ValueError("judging completions needs their problems")
    group = len(completions.texts) // max(len(problems), 1)
    if group * len(problems) != len(completions.texts):
        raise ValueError(f"{len(completions.texts)} completions do not split into groups for "
                         f"{len(problems)} problems")
    inputs = [RewardInput.from_problem(problems[row // group], text,
                                       int(completions.lengths_B[row]))
              for row, text in enumerate(completions.texts)]
    # The reward model is a sharded program: every process scores every general row alike.
    general = [row for row, s in enumerate(inputs) if s.general]
    if general and reward_model is not None:
        values = reward_model.score([problems[row // group].question for row in general],
                                    [completions.texts[row] for row in general])
        for row, value in zip(general, values):
            inputs[row] = dataclasses.replace(inputs[row], preference=float(value))
    # Rule rewards and the sandbox: each process judges its share of the rows.
    mine = distributed.host_rows(len(inputs))
    runner = pool if pool is not None else RewardPool(0)
    local = runner.map(score, [(sample, reward_config) for sample in inputs[mine]])
    parts = distributed.allgather([local])
    result = BatchResult(tuple(v for part in parts for v in part.values),
                         sum(p.errors for p in parts), sum(p.timeouts for p in parts),
                         sum(p.crashes for p in parts), tuple(m for p in parts for m in p.messages))
    scores = BatchScores(result.values,
                         batch_metrics(result, [name for name, _ in reward_config.weights]))
    return dataclasses.replace(completions, scores=scores)
