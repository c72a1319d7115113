"""GRPO ablations from config overrides: the objective variants, β, and the group size.

    python launch/sweep.py --config=experiments/r1_zero.py --sweep=experiments/sweeps/grpo_variants.py

``get_sweep(arg)`` returns one ``{"name": ..., "<flattened.config.key>": value, ...}`` per run;
``arg`` selects a family: ``objective`` (GRPO, Dr. GRPO, DAPO, GSPO), ``beta``, ``group``, or all.
"""

OBJECTIVES = [
    # DeepSeekMath GRPO: std-normalized advantages, per-sequence token mean.
    {"name": "grpo", "grpo.advantage_mode": "grpo", "grpo.loss.loss_agg": "seq-mean-token-mean",
     "grpo.loss.epsilon_low": 0.2, "grpo.loss.epsilon_high": 0.2},
    # Dr. GRPO (arXiv 2503.20783): no std scaling, token sum over a constant length.
    {"name": "dr_grpo", "grpo.advantage_mode": "dr_grpo",
     "grpo.loss.loss_agg": "seq-mean-token-sum-norm"},
    # DAPO (arXiv 2503.14476): clip-higher, token-level mean, no KL, dynamic sampling.
    {"name": "dapo", "grpo.loss.epsilon_low": 0.2, "grpo.loss.epsilon_high": 0.28,
     "grpo.loss.loss_agg": "token-mean", "grpo.loss.beta": 0.0, "dynamic_sampling": True},
    # GSPO (arXiv 2507.18071): sequence-level ratio with its small clip range.
    {"name": "gspo", "grpo.loss.ratio_level": "sequence", "grpo.loss.epsilon_low": 3e-4,
     "grpo.loss.epsilon_high": 4e-4, "grpo.loss.loss_agg": "seq-mean-token-mean"},
]
BETAS = [{"name": f"beta={b}", "grpo.loss.beta": b, "grpo.loss.kl_estimator": "k3"}
         for b in (0.0, 0.001, 0.04)]
GROUPS = [{"name": f"G={g}", "grpo.group_size": g} for g in (4, 8, 16)]


def get_sweep(arg=None):
    families = {"objective": OBJECTIVES, "beta": BETAS, "group": GROUPS}
    if arg is None:
        return OBJECTIVES + BETAS + GROUPS
    if arg not in families:
        raise ValueError(f"grpo_variants.py: unknown family {arg!r}; choose from {sorted(families)}")
    return families[arg]
