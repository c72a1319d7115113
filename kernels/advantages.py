"""Group-relative advantages for GRPO-family objectives: Pallas kernel, wrapper and jnp reference.

Rewards come as ``rewards_PxG``: P prompts (groups) x G sampled completions each.  Statistics use
the valid samples of a group only (``valid_PxG`` true and the reward finite; NaN or inf rewards
count as invalid).  With n valid samples in a group, mean m = (1/n) sum_i r_i and
std s = sqrt(sum_i (r_i - m)^2 / (n - ddof)):

  grpo     A_i = (r_i - m) / (s + eps)                 DeepSeekMath (Shao et al. 2024, sec. 4.1.2)
  dr_grpo  A_i = r_i - m                               Dr. GRPO (Liu et al. 2025): no std division
  rloo     A_i = r_i - (1/(n-1)) sum_{j != i} r_j      RLOO (Ahmadian et al. 2024)
               = n/(n-1) (r_i - m)

Degenerate cases never produce NaN: invalid samples get A = 0; a group whose valid rewards are
all equal (no learning signal) gets A = 0 and is counted in ``zero_std_P``; a group with fewer
than two valid samples gets A = 0 (it is also all-equal when it has one).

``batch_normalize=True`` then divides every advantage by (the std of the advantages over all valid
samples of the batch + eps): group baselines, batch-level scale, as in REINFORCE++'s global
normalization (Hu 2025).  With mode="dr_grpo" this is TRL's ``scale_rewards="batch"`` except that
TRL takes the std of the raw rewards rather than of the centered ones.

Advantages are constants of the policy-gradient loss, so none of this is differentiable.

The kernel tiles the prompt axis only: a tile always holds whole groups (``block_p`` x G), so each
grid step is independent ("parallel").
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as plgpu

from kernels.block_sizes import ADVANTAGE_IMPLS, AdvantageBlockSizes

MODES = ("grpo", "dr_grpo", "rloo")
# Columns of the per-group statistics the kernel writes next to the advantages.
_MEAN, _STD, _COUNT, _ZERO_STD = range(4)


class GroupedAdvantages(NamedTuple):
    """Advantages and per-group statistics (a pytree: it can leave a jitted function).

    Attributes:
      advantages_PxG: float32 advantages, 0 on invalid samples and degenerate groups.
      mean_P: mean of the valid rewards of each group (0 if none).
      std_P: std (with ``ddof``) of the valid rewards of each group (0 if fewer than ddof + 1).
      num_valid_P: number of valid samples in each group (int32).
      zero_std_P: True for groups with at least one valid sample whose valid rewards are all equal.
    """

    advantages_PxG: jax.Array
    mean_P: jax.Array
    std_P: jax.Array
    num_valid_P: jax.Array
    zero_std_P: jax.Array

    @property
    def num_zero_std_groups(self) -> jax.Array:
        """How many groups carried no learning signal (all valid rewards equal); int32 scalar."""
        return jnp.sum(self.zero_std_P.astype(jnp.int32))


def _group_math(rewards, valid, *, mode, eps, ddof):
    """Advantages and stats for a block of whole groups; shared by the kernel and the reference.

    ``rewards`` f32 [p, G], ``valid`` bool [p, G].  Returns adv [p, G] and (mean, std, count,
    zero_std) each [p, 1] f32.  Only elementwise ops and row reductions, so it lowers on Mosaic
    and Triton alike.
    """
    # NaN != NaN, and |inf| is not < inf: both make the sample invalid.
    valid = valid & (rewards == rewards) & (jnp.abs(rewards) < jnp.inf)
    count = jnp.sum(valid.astype(jnp.float32), axis=1, keepdims=True)
    mean = jnp.sum(jnp.where(valid, rewards, 0.0), axis=1, keepdims=True) / jnp.maximum(count, 1.0)
    dev = jnp.where(valid, rewards - mean, 0.0)
    dof = count - ddof
    var = jnp.sum(dev * dev, axis=1, keepdims=True) / jnp.maximum(dof, 1.0)
    std = jnp.where(dof > 0, jnp.sqrt(var), 0.0)
    # Exact equality of the extremes, not std == 0: the f32 mean of equal values need not equal
    # them, so r - mean can be a tiny nonzero that (s + eps) would blow up.
    r_max = jnp.max(jnp.where(valid, rewards, -jnp.inf), axis=1, keepdims=True)
    r_min = jnp.min(jnp.where(valid, rewards, jnp.inf), axis=1, keepdims=True)
    zero_std = (count >= 1.0) & (r_max == r_min)
    if mode == "grpo":
        adv = dev / (std + eps)
    elif mode == "dr_grpo":
        adv = dev
    else:  # rloo: leave-one-out baseline
        adv = dev * (count / jnp.maximum(count - 1.0, 1.0))
    signal = valid & ~zero_std & (count >= 2.0)
    adv = jnp.where(signal, adv, 0.0)
    return adv, (mean, std, count, zero_std.astype(jnp.float32))


def _kernel(r_ref, v_ref, adv_ref, stats_ref, *, mode, eps, ddof):
    adv, stats = _group_math(r_ref[...], v_ref[...] != 0, mode=mode, eps=eps, ddof=ddof)
    adv_ref[...] = adv
    for k, value in enumerate(stats):
        stats_ref[:, k:k + 1] = value


def _pallas_group_stats(rewards_PxG, valid_PxG, *, mode, eps, ddof, impl, blocks, interpret):
    """Runs the kernel over padded [P', G'] arrays; returns adv [P, G] and stats [P, 4]."""
    n_groups, group_size = rewards_PxG.shape
    block_p = blocks.block_p
    width = group_size
    if impl == "pallas_gpu":
        # Triton tiles must be powers of two: pad the group axis with invalid samples.
        width = pl.next_power_of_2(group_size)
        block_p = min(block_p, pl.next_power_of_2(n_groups))
        compiler_params = plgpu.CompilerParams(num_warps=4, num_stages=1)
    else:
        block_p = min(block_p, -(-n_groups // 8) * 8)  # whole (8, 128) tiles, no more than needed
        compiler_params = pltpu.CompilerParams(dimension_semantics=("parallel",))
    padded_p = -(-n_groups // block_p) * block_p
    pad = ((0, padded_p - n_groups), (0, width - group_size))
    # Padding is invalid (valid = 0), so it never enters a statistic; rewards pad with 0, not NaN.
    rewards = jnp.pad(rewards_PxG.astype(jnp.float32), pad)
    valid = jnp.pad(valid_PxG.astype(jnp.int32), pad)
    adv, stats = pl.pallas_call(
        functools.partial(_kernel, mode=mode, eps=eps, ddof=ddof),
        grid=(padded_p // block_p,),
        in_specs=[pl.BlockSpec((block_p, width), lambda i: (i, 0))] * 2,
        out_specs=[pl.BlockSpec((block_p, width), lambda i: (i, 0)),
                   pl.BlockSpec((block_p, 4), lambda i: (i, 0))],
        out_shape=[jax.ShapeDtypeStruct((padded_p, width), jnp.float32),
                   jax.ShapeDtypeStruct((padded_p, 4), jnp.float32)],
        compiler_params=compiler_params,
        interpret=interpret,
        name="grouped_advantages",
    )(rewards, valid)
    return adv[:n_groups, :group_size], stats[:n_groups]


def grouped_advantages_reference(rewards_PxG, valid_PxG, *, mode="grpo", eps=1e-4, ddof=1):
    """Plain-jnp (XLA) version of the kernel: same math, no tiling.  Returns (adv, stats [P, 4])."""
    adv, stats = _group_math(rewards_PxG.astype(jnp.float32), valid_PxG.astype(bool), mode=mode,
                             eps=eps, ddof=ddof)
    return adv, jnp.concatenate(stats, axis=1)


def _resolve_impl(impl):
    if impl not in ADVANTAGE_IMPLS:
        raise ValueError(f"grouped_advantages: impl={impl!r} is not one of {ADVANTAGE_IMPLS}.")
    if impl != "auto":
        return impl
    # On CPU, XLA fuses the few elementwise ops and reductions as well as any kernel would.
    return {"tpu": "pallas_tpu", "gpu": "pallas_gpu"}.get(jax.default_backend(), "reference")


def grouped_advantages(rewards_PxG, valid_PxG=None, *, mode="grpo", eps=1e-4, ddof=1,
                       batch_normalize=False, impl="auto", block_sizes=None, interpret=False):
    """Group-relative advantages; see the module docstring for the equations.

    Args:
      rewards_PxG: rewards, P groups (prompts) x G samples each.
      valid_PxG: bool mask of samples that count (None: all).  Non-finite rewards are invalid too.
      mode: "grpo" (centered, divided by group std + eps), "dr_grpo" (centered only) or "rloo"
        (leave-one-out baseline).
      eps: added to the std before dividing (grpo, and batch normalization); 1e-4 as in TRL.
      ddof: delta degrees of freedom of the std; 1 (Bessel) as in DeepSeekMath's torch ``.std()``.
      batch_normalize: divide all advantages by the batch-wide std of the valid advantages + eps.
      impl: "auto" (Pallas on TPU/GPU, reference elsewhere), "pallas_tpu", "pallas_gpu",
        "reference".
      block_sizes: an ``AdvantageBlockSizes``; None for the default.
      interpret: run the Pallas kernel in interpret mode (True), or pass a
        ``pltpu.InterpretParams`` for TPU interpret mode.

    Returns:
      A ``GroupedAdvantages``; ``.num_zero_std_groups`` counts groups with all-equal rewards.
    """
    if mode not in MODES:
        raise ValueError(f"grouped_advantages: mode={mode!r} is not one of {MODES}.")
    if rewards_PxG.ndim != 2:
        raise ValueError(f"grouped_advantages wants rewards [P, G], got shape {rewards_PxG.shape}.")
    if valid_PxG is None:
        valid_PxG = jnp.ones(rewards_PxG.shape, bool)
    if valid_PxG.shape != rewards_PxG.shape:
        raise ValueError(f"grouped_advantages: valid {valid_PxG.shape} must match rewards "
                         f"{rewards_PxG.shape}.")
    if not (eps >= 0 and ddof >= 0):
        raise ValueError(f"grouped_advantages: need eps >= 0 and ddof >= 0, got {eps}, {ddof}.")
    impl = _resolve_impl(impl)
    blocks = block_sizes or AdvantageBlockSizes()
    if impl != "reference":
        blocks.validate(impl)
    return _grouped_advantages(rewards_PxG, valid_PxG, mode=mode, eps=float(eps), ddof=int(ddof),
                               batch_normalize=bool(batch_normalize), impl=impl, blocks=blocks,
                               interpret=interpret)


# One compiled program per setting: run op by op (as from the host between rollout and update),
# the dozen small ops would cost ~1.5 ms of dispatch for microseconds of arithmetic.
@functools.partial(jax.jit, static_argnames=("mode", "eps", "ddof", "batch_normalize", "impl",
                                             "blocks", "interpret"))
def _grouped_advantages(rewards_PxG, valid_PxG, *, mode, eps, ddof, batch_normalize, impl,
                        blocks, interpret):
    statics = dict(mode=mode, eps=eps, ddof=ddof)
    if impl == "reference" or rewards_PxG.size == 0:
        adv_PxG, stats_Px4 = grouped_advantages_reference(rewards_PxG, valid_PxG, **statics)
    else:
        adv_PxG, stats_Px4 = _pallas_group_stats(rewards_PxG, valid_PxG, impl=impl, blocks=blocks,
                                                 interpret=interpret, **statics)
    if batch_normalize:
        adv_PxG = _batch_normalize(adv_PxG, rewards_PxG, valid_PxG, eps=eps, ddof=ddof)
    return GroupedAdvantages(
        advantages_PxG=adv_PxG,
        mean_P=stats_Px4[:, _MEAN],
        std_P=stats_Px4[:, _STD],
        num_valid_P=stats_Px4[:, _COUNT].astype(jnp.int32),
        zero_std_P=stats_Px4[:, _ZERO_STD] > 0,
    )


def _batch_normalize(adv_PxG, rewards_PxG, valid_PxG, *, eps, ddof):
    """A / (std of A over the batch's valid samples + eps); O(P G), so plain jnp."""
    valid = valid_PxG.astype(bool) & jnp.isfinite(rewards_PxG)
    count = jnp.sum(valid)
    mean = jnp.sum(jnp.where(valid, adv_PxG, 0.0)) / jnp.maximum(count, 1)
    var = jnp.sum(jnp.where(valid, adv_PxG - mean, 0.0) ** 2) / jnp.maximum(count - ddof, 1)
    scale = jnp.where(count - ddof > 0, jnp.sqrt(var), 0.0) + eps
    # An all-zero batch with eps = 0 has scale 0; its advantages stay 0 rather than 0 / 0.
    return jnp.where(valid & (scale > 0), adv_PxG / jnp.where(scale > 0, scale, 1.0), 0.0)
