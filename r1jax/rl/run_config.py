"""A whole GRPO run's settings: what experiments/*.py describe, validated at start-up.

``r1jax.configdict.from_config(RunConfig, config)`` is the boundary: every key of the ConfigDict
must be a field here (typos fail with the full path), and cross-field checks name the field and
the fix.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

from r1jax.sampling_request import SamplingRequest
from r1jax.data.sources import DataSource
from r1jax.policy import ModelSource
from r1jax.rl.config import GRPOConfig
from r1jax.sharding import MeshSettings


@dataclasses.dataclass(frozen=True)
class RewardSettings:
    """Component weights (accuracy, preference, format, language, overlong), DAPO's overlong
    lengths, and the preference reward model (an ``r1jax.rm`` export) that judges general prompts."""

    weights: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {"accuracy": 1.0, "format": 1.0})
    reward_model: str | None = None
    overlong_max_tokens: int | None = None
    overlong_cache_tokens: int = 0
    num_workers: int = 2
    timeout_s: float = 30.0


@dataclasses.dataclass(frozen=True)
class HeldOutEval:
    """Held-out evaluation every ``every`` steps (and before the first and after the last)."""

    every: int = 50
    num_problems: int = 200
    num_samples: int = 4
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 64


@dataclasses.dataclass(frozen=True)
class CheckpointSettings:
    every: int = 50
    max_to_keep: int = 2
    keep_best: bool = False  # keep the checkpoint with the best held-out pass@1 too


@dataclasses.dataclass(frozen=True)
class LoggingSettings:
    every: int = 1
    samples_every: int = 10
    num_samples: int = 2
    tensorboard: bool = True
    progress_bar: bool = True


@dataclasses.dataclass(frozen=True)
class RunConfig:
    job: str
    steps: int
    prompts_per_step: int
    model: ModelSource
    seed: int = 0
    name: str = "grpo"
    data: DataSource = DataSource()
    rollout: SamplingRequest = SamplingRequest(max_new_tokens=64, stop_strings=("</answer>",))
    grpo: GRPOConfig = GRPOConfig()
    rewards: RewardSettings = RewardSettings()
    eval: HeldOutEval = HeldOutEval()
    checkpoint: CheckpointSettings = CheckpointSettings()
    logging: LoggingSettings = LoggingSettings()
    mesh: MeshSettings = MeshSettings()
    dynamic_sampling: bool = False  # DAPO: refill groups whose rewards are all equal
    max_refills: int = 4
    # Stop training once this many seconds have passed (for equal-time comparisons); ``steps``
    # stays the upper bound. A run stopped by its budget is not resumed bit-identically.
    time_budget_s: float | None = None

    def __post_init__(self):
        if self.job != "grpo":
            raise ValueError(f"job must be 'grpo' for a GRPO run, got {self.job!r}")
        if self.steps < 1 or self.prompts_per_step < 1:
            raise ValueError("steps and prompts_per_step must be >= 1")
        rows = self.prompts_per_step * self.grpo.group_size
        if rows % self.grpo.num_minibatches:
            raise ValueError(
                f"prompts_per_step × grpo.group_size = {rows} rows do not split into "
                f"grpo.num_minibatches = {self.grpo.num_minibatches}; choose a divisor of {rows}")
        per_minibatch = rows // self.grpo.num_minibatches
        if per_minibatch % self.grpo.num_microbatches:
            raise ValueError(
                f"a minibatch of {per_minibatch} rows does not split into grpo.num_microbatches = "
                f"{self.grpo.num_microbatches}; choose a divisor of {per_minibatch}")
        if self.rewards.weights.get("preference") and not self.rewards.reward_model:
            raise ValueError("rewards.weights.preference needs rewards.reward_model (the export "
                             "directory of an r1jax reward model)")
        if self.grpo.temperature != self.rollout.temperature:
            raise ValueError(
                f"grpo.temperature ({self.grpo.temperature}) must equal rollout.temperature "
                f"({self.rollout.temperature}): log-probs are of the distribution sampled from")
        loss = self.grpo.loss
        if loss.loss_agg == "seq-mean-token-sum-norm" and loss.loss_norm_length is None:
            # Dr. GRPO's normalizer is a constant, the generation budget: resolved here once, so
            # the update never falls back to the batch's width (which varies with each step's
            # longest completion).
            object.__setattr__(self, "grpo", dataclasses.replace(
                self.grpo, loss=dataclasses.replace(
                    loss, loss_norm_length=self.rollout.max_new_tokens)))
