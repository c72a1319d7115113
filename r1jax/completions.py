"""Sample → decode → score: the one way a job turns prompts into judged completions.

GRPO's rollouts, evaluation, rejection sampling and the base-model probe all describe what to
sample with one ``SamplingRequest`` and call ``complete``: the prompts go to
``r1jax.rollout.generate`` (G samples each, row ``p·G + g`` being sample g of prompt p), the
completions are decoded to text on the host, and — given a ``RewardConfig`` — judged against their
problems by the rewards package (in a ``RewardPool`` of worker processes; code in the sandbox).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from r1jax.data import Problem, Template
from r1jax.rewards import BatchScores, RewardConfig, RewardInput, RewardPool, score_batch
from r1jax.tokenizer import Tokenizer

if TYPE_CHECKING:
    import jax

    from r1jax import rollout

# End-of-turn tokens of common chat vocabularies (``SamplingRequest.stop_at_end_of_turn``).
END_OF_TURN_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<｜end▁of▁sentence｜>")


@dataclasses.dataclass(frozen=True)
class SamplingRequest:
    """What to sample for each prompt: up to ``max_new_tokens`` tokens at ``temperature`` (0:
    greedy) with top-p/top-k truncation, ending at the tokenizer's EOS, at any of
    ``stop_strings``, and (``stop_at_end_of_turn``) at the end-of-turn tokens of chat vocabularies.
    How many samples per prompt is the caller's group size."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_strings: tuple[str, ...] = ()
    stop_at_end_of_turn: bool = False

    def __post_init__(self):
        if isinstance(self.max_new_tokens, bool) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        object.__setattr__(self, "stop_strings", tuple(str(s) for s in self.stop_strings))
        if any(not s for s in self.stop_strings):
            raise ValueError("stop_strings must not contain an empty string")

    def stop_ids(self, tokenizer: Tokenizer) -> list[int]:
        ids = {tokenizer.eos_id} if tokenizer.eos_id is not None else set()
        if self.stop_at_end_of_turn:
            for token in END_OF_TURN_TOKENS:
                token_id = tokenizer.token_to_id(token)
                if token_id is not None:
                    ids.add(int(token_id))
        return sorted(ids)


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
             pool: RewardPool | None = None, reward_model=None, sharding=None) -> Completions:
    """``group_size`` completions of every prompt, decoded, and — given ``reward_config`` —
    judged against ``problems`` (one per prompt); see ``judge`` for ``reward_model``."""
    # Imported here: settings that hold a request (evaluation's) are read by reward workers,
    # which never import jax.
    from r1jax import rollout

    out = rollout.generate(
        params, model_cfg, prompts, rng=rng, max_new_tokens=request.max_new_tokens,
        group_size=group_size, temperature=request.temperature, top_p=request.top_p,
        top_k=request.top_k, stop_ids=request.stop_ids(tokenizer),
        stop_strings=request.stop_strings, tokenizer=tokenizer, pad_id=tokenizer.pad_id,
        sharding=sharding)
    completions = decode_completions(out, tokenizer)
    if reward_config is None:
        return completions
    return judge(completions, problems, reward_config, pool, reward_model=reward_model)


def decode_completions(out: rollout.Rollout, tokenizer: Tokenizer) -> Completions:
    tokens_BxT, lengths_B = np.asarray(out.tokens), np.asarray(out.lengths)
    texts = [tokenizer.decode(tokens_BxT[row, :lengths_B[row]].tolist())
             for row in range(tokens_BxT.shape[0])]
    return Completions(out, texts, lengths_B, np.asarray(out.stopped))


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
    general = [row for row, s in enumerate(inputs) if s.general]
    if general and reward_model is not None:
        values = reward_model.score([problems[row // group].question for row in general],
                                    [completions.texts[row] for row in general])
        for row, value in zip(general, values):
            inputs[row] = dataclasses.replace(inputs[row], preference=float(value))
    return dataclasses.replace(completions, scores=score_batch(inputs, reward_config, pool))
