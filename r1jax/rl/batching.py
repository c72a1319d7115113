"""Host-side steps of a GRPO iteration: prompts to tokens, completions to rewards, rewards to a
training batch.

Rewards are host functions on strings (``r1jax.rewards``, in a process pool); a sample that could
not be judged is invalid: it gets advantage 0 and its group's statistics leave it out.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import kernels
from r1jax.data import Problem, Template
from r1jax.rewards import extract
from r1jax.rewards.combine import RewardConfig, RewardInput
from r1jax.rewards.pool import RewardPool, score_batch
from r1jax.rl.step import GRPOBatch
from r1jax.rollout import Rollout
from r1jax.tokenizer import Tokenizer


def encode_prompts(tokenizer: Tokenizer, template: Template, problems: Sequence[Problem],
                   max_prompt_tokens: int) -> list[list[int]]:
    """Each problem's question in the template, as token ids (no special tokens are added)."""
    prompts = []
    for problem in problems:
        ids = tokenizer.encode(template.render(problem.question))
        if len(ids) > max_prompt_tokens:
            raise ValueError(
                f"problem {problem.id!r}: its prompt is {len(ids)} tokens, more than "
                f"data.max_prompt_tokens = {max_prompt_tokens}; raise it or shorten the question")
        prompts.append(ids)
    return prompts


@dataclasses.dataclass(frozen=True)
class ScoredRollout:
    """Completions as text, rewards ``[P, G]`` (NaN where not judged), and per-sample facts."""

    texts: list[str]
    rewards_PxG: np.ndarray
    components: dict[str, np.ndarray]  # name -> [P·G], NaN where not judged
    lengths: np.ndarray
    stopped: np.ndarray
    think_lengths: np.ndarray
    metrics: dict[str, float]


def score(rollout: Rollout, problems: Sequence[Problem], tokenizer: Tokenizer,
          reward_cfg: RewardConfig, pool: RewardPool | None, reward_model=None) -> ScoredRollout:
    """Decode every completion and score it against its problem (row ``p·G + g`` → problem p).

    Completions of general prompts are first scored by ``reward_model`` (a
    ``r1jax.rm.RewardModelScorer``), which becomes their ``preference`` component.
    """
    group = rollout.group_size
    tokens = np.asarray(rollout.tokens)
    lengths = np.asarray(rollout.lengths)
    texts = [tokenizer.decode(tokens[i, :lengths[i]].tolist()) for i in range(len(tokens))]
    samples = [RewardInput.from_problem(problems[i // group], text, int(lengths[i]))
               for i, text in enumerate(texts)]
    general = [i for i, s in enumerate(samples) if s.general]
    if general and reward_model is not None:
        values = reward_model.score([problems[i // group].question for i in general],
                                    [texts[i] for i in general])
        for i, value in zip(general, values):
            samples[i] = dataclasses.replace(samples[i], preference=float(value))
    batch = score_batch(samples, reward_cfg, pool)
    totals = np.array([np.nan if t is None else t for t in batch.totals], np.float64)
    components = {}
    for name, _ in reward_cfg.weights:
        components[name] = np.array(
            [np.nan if b is None or b.components.get(name) is None else b.components[name]
             for b in batch.breakdowns], np.float64)
    think = np.array([len(tokenizer.encode(extract.think_text(t))) for t in texts], np.float64)
    metrics = dict(batch.metrics)
    return ScoredRollout(texts, totals.reshape(-1, group), components, lengths,
                         np.asarray(rollout.stopped), think, metrics)


def advantages(rewards_PxG: np.ndarray, mode: str, eps: float):
    """Group-relative advantages (``kernels.grouped_advantages``); NaN rewards are invalid."""
    rewards = jnp.asarray(np.nan_to_num(rewards_PxG, nan=0.0), jnp.float32)
    valid = jnp.asarray(~np.isnan(rewards_PxG))
    return kernels.grouped_advantages(rewards, valid, mode=mode, eps=eps)


def completion_bucket(longest: int, budget: int, quantum: int = 16) -> int:
    """Columns of completion kept for the update: the longest completion rounded up to a multiple
    of ``quantum`` (so a run compiles a few shapes), at most the budget."""
    return min(budget, max(quantum, -(-longest // quantum) * quantum))


def make_batch(rollout: Rollout, advantages_B, *, columns: int,
               sampler_logprobs: bool = False) -> GRPOBatch:
    """Prompt and completion side by side, ``[P·G, Lp + T]``, keeping ``columns`` completion
    columns (everything after them is padding)."""
    return _make_batch(rollout.prompt_tokens, rollout.prompt_mask, rollout.tokens, rollout.mask,
                       rollout.logprobs if sampler_logprobs else None,
                       jnp.asarray(advantages_B, jnp.float32), group=rollout.group_size,
                       columns=columns)


# Jitted as one program: op by op from the host, it was ~0.6 ms of dispatch per step.
@functools.partial(jax.jit, static_argnames=("group", "columns"))
def _make_batch(prompt_PxLp, prompt_mask_PxLp, tokens_BxT, mask_BxT, logprobs_BxT, advantages,
                *, group: int, columns: int) -> GRPOBatch:
    prompts = jnp.repeat(prompt_PxLp, group, axis=0)
    prompt_mask = jnp.repeat(prompt_mask_PxLp, group, axis=0)
    completion = tokens_BxT[:, :columns]
    completion_mask = mask_BxT[:, :columns].astype(jnp.int32)
    return GRPOBatch(
        tokens_BxL=jnp.concatenate([prompts, completion], axis=1).astype(jnp.int32),
        attention_mask_BxL=jnp.concatenate([prompt_mask.astype(jnp.int32), completion_mask],
                                           axis=1),
        completion_mask_BxT=completion_mask,
        advantages_B=advantages.reshape(-1),
        sampler_logp_BxT=None if logprobs_BxT is None else logprobs_BxT[:, :columns],
    )


def rollout_metrics(scored: ScoredRollout, budget: int) -> dict[str, float]:
    """Per-step reward, accuracy, format and length statistics of a scored rollout."""
    def mean(x):
        x = np.asarray(x, np.float64)
        x = x[~np.isnan(x)]
        return float(x.mean()) if x.size else float("nan")

    out = {
        "reward": mean(scored.rewards_PxG),
        "response_length": float(scored.lengths.mean()),
        "response_length_max": float(scored.lengths.max()),
        "think_length": float(scored.think_lengths.mean()),
        "truncation_rate": float(np.mean(~scored.stopped.astype(bool)
                                         & (scored.lengths >= budget))),
        "unjudged": float(np.isnan(scored.rewards_PxG).sum()),
    }
    for name, values in scored.components.items():
        out[name] = mean(values)
    out.update({k: v for k, v in scored.metrics.items() if k.endswith(("errors", "timeouts",
                                                                       "crashes"))})
    return out


def take_groups(parts: Sequence[tuple[Rollout, ScoredRollout, Sequence[Problem]]],
                picks: Sequence[tuple[int, int]]):
    """Groups ``picks = [(part, group), …]`` from several scored rollouts, as one (DAPO's dynamic
    sampling keeps informative groups across refills). Prompts are re-padded on the left to the
    longest bucket among the parts."""
    prompt_len = max(int(r.prompt_tokens.shape[1]) for r, _, _ in parts)
    group = parts[0][0].group_size
    fields = {name: [] for name in ("tokens", "lengths", "mask", "logprobs", "stopped")}
    prompts, prompt_masks, problems = [], [], []
    texts, rewards, lengths, stopped, think = [], [], [], [], []
    components = {name: [] for name in parts[0][1].components}
    for part, g in picks:
        rollout, scored, part_problems = parts[part]
        rows = slice(g * group, (g + 1) * group)
        for name in fields:
            fields[name].append(np.asarray(getattr(rollout, name))[rows])
        pad = prompt_len - rollout.prompt_tokens.shape[1]
        prompts.append(np.pad(np.asarray(rollout.prompt_tokens)[g], (pad, 0)))
        prompt_masks.append(np.pad(np.asarray(rollout.prompt_mask)[g], (pad, 0)))
        problems.append(part_problems[g])
        texts += scored.texts[rows]
        rewards.append(scored.rewards_PxG[g])
        lengths.append(scored.lengths[rows])
        stopped.append(scored.stopped[rows])
        think.append(scored.think_lengths[rows])
        for name in components:
            components[name].append(scored.components[name][rows])
    merged = Rollout(**{k: jnp.asarray(np.concatenate(v)) for k, v in fields.items()},
                     prompt_tokens=jnp.asarray(np.stack(prompts)),
                     prompt_mask=jnp.asarray(np.stack(prompt_masks)),
                     decode_steps=max(r.decode_steps for r, _, _ in parts))
    scored = ScoredRollout(texts, np.stack(rewards), {k: np.concatenate(v) for k, v in
                                                      components.items()},
                           np.concatenate(lengths), np.concatenate(stopped), np.concatenate(think),
                           dict(parts[0][1].metrics))
    return merged, scored, problems
