"""GRPO settings as frozen, validated dataclasses: the loss, the optimizer, and the update loop."""
from __future__ import annotations

import dataclasses

from r1jax.optim import OptimConfig

KL_ESTIMATORS = ("k1", "k2", "k3")
LOSS_AGGREGATIONS = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")
RATIO_LEVELS = ("token", "sequence")
ADVANTAGE_MODES = ("grpo", "dr_grpo", "rloo")
OLD_LOGPROBS = ("recompute", "sampler")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The clipped surrogate, the KL penalty and how per-token losses are aggregated.

    Defaults are DeepSeekMath's GRPO (ε = 0.2, β = 0.04, k3, per-sequence token mean). DeepSeek-R1
    used ε = 10 (with ``epsilon_low >= 1`` the lower bound is inactive since ρ > 0). DAPO:
    ``epsilon_high=0.28, loss_agg="token-mean", beta=0``; Dr. GRPO: ``loss_agg=
    "seq-mean-token-sum-norm"`` with ``advantage_mode="dr_grpo"``; GSPO: ``ratio_level="sequence"``.

    Dr. GRPO divides each sequence's token sum by the constant ``loss_norm_length``. Left None,
    ``r1jax.rl.run_config.RunConfig`` sets it to the run's completion budget
    ``rollout.max_new_tokens`` (the paper's choice); a ``LossConfig`` used without a ``RunConfig``
    must set it, and ``losses.token_weights`` refuses that aggregation without it.
    """

    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    dual_clip: float | None = None  # c > 1 bounds the loss of negative-advantage tokens (Ye et al.)
    beta: float = 0.04
    kl_estimator: str = "k3"
    loss_agg: str = "seq-mean-token-mean"
    ratio_level: str = "token"
    # Dr. GRPO's constant divisor; None: RunConfig fills in rollout.max_new_tokens (see above).
    loss_norm_length: int | None = None
    # Truncated importance sampling against the sampler's log-probs (None: off).
    tis_cap: float | None = None
    # Mixture-of-experts policies: this times the mean over MoE layers of the Switch / Qwen3-MoE
    # balancing loss is added to the loss (0: off, the statistics are still logged). Off by
    # default because RL fine-tuning starts from a base whose routing is already balanced, and a
    # balancing gradient moves the router away from the sampler's choices.
    moe_aux_coef: float = 0.0

    def __post_init__(self):
        _check(self.epsilon_low >= 0 and self.epsilon_high >= 0,
               f"epsilon_low/epsilon_high must be >= 0, got {self.epsilon_low}/{self.epsilon_high}")
        _check(self.dual_clip is None or self.dual_clip > 1,
               f"dual_clip must be > 1 or None, got {self.dual_clip}")
        _check(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
        _check(self.kl_estimator in KL_ESTIMATORS,
               f"kl_estimator {self.kl_estimator!r} is not one of {KL_ESTIMATORS}")
        _check(self.loss_agg in LOSS_AGGREGATIONS,
               f"loss_agg {self.loss_agg!r} is not one of {LOSS_AGGREGATIONS}")
        _check(self.ratio_level in RATIO_LEVELS,
               f"ratio_level {self.ratio_level!r} is not one of {RATIO_LEVELS}")
        _check(self.loss_norm_length is None or self.loss_norm_length > 0,
               f"loss_norm_length must be positive, got {self.loss_norm_length}")
        _check(self.tis_cap is None or self.tis_cap >= 1,
               f"tis_cap must be >= 1 or None, got {self.tis_cap}")
        _check(self.moe_aux_coef >= 0, f"moe_aux_coef must be >= 0, got {self.moe_aux_coef}")


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """One GRPO update: loss, optimizer, and how the rollout batch is cut.

    Each rollout of ``num_prompts × group_size`` sequences is split into ``num_minibatches``
    optimizer steps, repeated ``num_iterations`` (μ) times; each minibatch is accumulated over
    ``num_microbatches`` forward/backward passes. Old-policy log-probs are recomputed once per
    rollout (``old_logprobs="recompute"``) or taken from the sampler (``"sampler"``).

    ``router_replay`` (mixtures of experts): the rollout records the experts every MoE layer chose
    for every token, and every training forward of the batch (old-policy, reference, update)
    routes each token to them instead of choosing afresh (``r1jax.rollout.router_replay``).
    """

    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    group_size: int = 4
    advantage_mode: str = "grpo"
    advantage_eps: float = 1e-4
    num_minibatches: int = 1
    num_iterations: int = 1
    num_microbatches: int = 1
    temperature: float = 1.0
    old_logprobs: str = "recompute"
    ref_update_interval: int | None = None  # steps between resets of the reference to the policy
    logprob_impl: str = "auto"
    max_consecutive_skips: int = 5
    router_replay: bool = False

    def __post_init__(self):
        _check(self.group_size >= 1, f"group_size must be >= 1, got {self.group_size}")
        _check(self.advantage_mode in ADVANTAGE_MODES,
               f"advantage_mode {self.advantage_mode!r} is not one of {ADVANTAGE_MODES}")
        for name in ("num_minibatches", "num_iterations", "num_microbatches",
                     "max_consecutive_skips"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        _check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        _check(self.old_logprobs in OLD_LOGPROBS,
               f"old_logprobs {self.old_logprobs!r} is not one of {OLD_LOGPROBS}")
        _check(self.ref_update_interval is None or self.ref_update_interval >= 1,
               f"ref_update_interval must be >= 1 or None, got {self.ref_update_interval}")

    @property
    def on_policy(self) -> bool:
        """One update per rollout from the policy that sampled it: the ratio is identically 1 and
        no separate old-policy forward is needed."""
        return (self.num_minibatches == 1 and self.num_iterations == 1
                and self.old_logprobs == "recompute")
