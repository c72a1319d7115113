"""A GRPO step's experience: prompts → G completions each → rewards (``r1jax.completions``),
with DAPO's dynamic sampling (groups whose rewards are all equal are replaced by new prompts).

Rewards are host functions on strings (in a process pool); a sample that could not be judged has
reward NaN, and the trainer leaves it out of its group's statistics.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np

from r1jax import completions as completions_lib
from r1jax import distributed
from r1jax.data import Problem, Sampler, SamplerState, Template
from r1jax.rewards import RewardConfig, RewardPool, extract
from r1jax.rollout import Rollout
from r1jax.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class ScoredRollout:
    """Completions as text, rewards ``[P, G]`` (NaN where not judged), and per-sample facts
    (``[P·G]``)."""

    texts: list[str]
    rewards_PxG: np.ndarray
    components: dict[str, np.ndarray]  # name -> [P·G], NaN where not judged
    lengths: np.ndarray
    stopped: np.ndarray
    think_lengths: np.ndarray
    metrics: dict[str, float]


@dataclasses.dataclass(frozen=True)
class Experience:
    """One step's rollout (device arrays), its scores, the problems (one per group), and how
    many times dynamic sampling drew new prompts."""

    rollout: Rollout
    scored: ScoredRollout
    problems: list[Problem]
    refills: int = 0


@dataclasses.dataclass(frozen=True)
class Collector:
    """What collecting needs besides the policy: the data, the template and the rewards."""

    problems: Any  # indexable training set
    sampler: Sampler
    template: Template
    tokenizer: Tokenizer
    request: completions_lib.SamplingRequest
    group_size: int
    prompts_per_step: int
    max_prompt_tokens: int
    reward_config: RewardConfig
    pool: RewardPool | None
    reward_model: Any = None
    dynamic_sampling: bool = False
    max_refills: int = 0
    record_experts: bool = False  # router replay: the rollout keeps its expert choices


def collect(c: Collector, params, model_cfg, sampler_state: SamplerState, key: jax.Array, *,
            sharding=None) -> tuple[Experience, SamplerState]:
    """``prompts_per_step`` groups of scored completions; with dynamic sampling, groups whose
    rewards are all equal are replaced by those of new prompts (at most ``max_refills`` draws;
    any shortfall is filled with the all-equal groups, whose advantages are 0)."""
    parts, informative, refills = [], [], 0
    while True:
        count = c.prompts_per_step - (len(informative) if c.dynamic_sampling else 0)
        indices, sampler_state = c.sampler.take(sampler_state, count)
        problems = [c.problems[int(i)] for i in indices]
        prompts = completions_lib.encode_prompts(c.tokenizer, c.template, problems,
                                                 max_tokens=c.max_prompt_tokens)
        done = completions_lib.complete(
            params, model_cfg, c.tokenizer, prompts, c.request, group_size=c.group_size,
            rng=jax.random.fold_in(key, refills), problems=problems,
            reward_config=c.reward_config, pool=c.pool, reward_model=c.reward_model,
            sharding=sharding, record_experts=c.record_experts)
        part = Experience(done.rollout, score(done, c.tokenizer, c.reward_config), problems)
        parts.append(part)
        informative += [(len(parts) - 1, g) for g in np.nonzero(
            informative_groups(part.scored.rewards_PxG))[0]]
        if (not c.dynamic_sampling or len(informative) >= c.prompts_per_step
                or refills >= c.max_refills):
            break
        refills += 1
    if not c.dynamic_sampling:
        return parts[0], sampler_state
    chosen = set(informative)
    rest = [(p, g) for p, part in enumerate(parts) for g in range(len(part.problems))
            if (p, g) not in chosen]
    picks = (informative + rest)[:c.prompts_per_step]
    return dataclasses.replace(take_groups(parts, picks), refills=refills), sampler_state


def informative_groups(rewards_PxG: np.ndarray) -> np.ndarray:
    """``[P]``: groups with a learning signal — at least two judged rewards that differ."""
    rewards = np.asarray(rewards_PxG, np.float32)
    valid = ~np.isnan(rewards)
    high = np.where(valid, rewards, -np.inf).max(axis=1)
    low = np.where(valid, rewards, np.inf).min(axis=1)
    return (valid.sum(axis=1) >= 2) & (high > low)


def score(done: completions_lib.Completions, tokenizer: Tokenizer,
          reward_config: RewardConfig) -> ScoredRollout:
    """Rewards ``[P, G]`` and per-component values from the judged completions."""
    group = done.rollout.group_size
    batch = done.scores
    totals = np.array([np.nan if t is None else t for t in batch.totals], np.float64)
    components = {}
    for name, _ in reward_config.weights:
        components[name] = np.array(
            [np.nan if b is None or b.components.get(name) is None else b.components[name]
             for b in batch.breakdowns], np.float64)
    think = np.array([len(tokenizer.encode(extract.think_text(t))) for t in done.texts],
                     np.float64)
    return ScoredRollout(done.texts, totals.reshape(-1, group), components, done.lengths_B,
                         done.stopped_B, think, dict(batch.metrics))


def take_groups(parts: Sequence[Experience], picks: Sequence[tuple[int, int]]) -> Experience:
    """Groups ``picks = [(part, group), …]`` from several experiences, as one. Prompts are
    re-padded on the left to the longest bucket among the parts."""
    prompt_len = max(int(p.rollout.prompt_tokens.shape[1]) for p in parts)
    group = parts[0].rollout.group_size
    recorded = parts[0].rollout.experts is not None  # router replay
    fields = {name: [] for name in ("tokens", "lengths", "mask", "logprobs", "stopped")
              + (("experts",) if recorded else ())}
    prompts, prompt_masks, prompt_experts, problems = [], [], [], []
    texts, rewards, lengths, stopped, think = [], [], [], [], []
    components = {name: [] for name in parts[0].scored.components}
    for index, g in picks:
        part = parts[index]
        rollout, scored = part.rollout, part.scored
        rows = slice(g * group, (g + 1) * group)
        for name in fields:
            fields[name].append(distributed.to_host(getattr(rollout, name))[rows])
        pad = prompt_len - rollout.prompt_tokens.shape[1]
        prompts.append(np.pad(distributed.to_host(rollout.prompt_tokens)[g], (pad, 0)))
        prompt_masks.append(np.pad(distributed.to_host(rollout.prompt_mask)[g], (pad, 0)))
        if recorded:  # [Lp, Y, A]: padded on the left like its prompt
            prompt_experts.append(np.pad(distributed.to_host(rollout.prompt_experts)[g],
                                         ((pad, 0), (0, 0), (0, 0))))
        problems.append(part.problems[g])
        texts += scored.texts[rows]
        rewards.append(scored.rewards_PxG[g])
        lengths.append(scored.lengths[rows])
        stopped.append(scored.stopped[rows])
        think.append(scored.think_lengths[rows])
        for name in components:
            components[name].append(scored.components[name][rows])
    first = parts[0].rollout
    merged = Rollout(**{k: distributed.like_rows(np.concatenate(v), getattr(first, k))
                        for k, v in fields.items()},
                     prompt_tokens=distributed.like_rows(np.stack(prompts), first.prompt_tokens),
                     prompt_mask=distributed.like_rows(np.stack(prompt_masks), first.prompt_mask),
                     decode_steps=max(int(p.rollout.decode_steps) for p in parts),
                     prompt_experts=distributed.like_rows(np.stack(prompt_experts),
                                                          first.prompt_experts)
                     if recorded else None)
    scored = ScoredRollout(texts, np.stack(rewards), {k: np.concatenate(v) for k, v in
                                                      components.items()},
                           np.concatenate(lengths), np.concatenate(stopped), np.concatenate(think),
                           dict(parts[0].scored.metrics))
    return Experience(merged, scored, problems)
