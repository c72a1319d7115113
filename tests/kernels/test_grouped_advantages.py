"""grouped_advantages: the Pallas kernel (both lowerings, interpreted) and reference vs numpy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from kernels import AdvantageBlockSizes, grouped_advantages

MODES = ("grpo", "dr_grpo", "rloo")
IMPLS = {
    "reference": dict(impl="reference"),
    "pallas_tpu": dict(impl="pallas_tpu", block_sizes=AdvantageBlockSizes(8), interpret=True),
    "pallas_gpu": dict(impl="pallas_gpu", block_sizes=AdvantageBlockSizes(8), interpret=True),
}


def oracle(rewards, valid, mode, eps, ddof, batch_normalize=False):
    """float64, one group at a time, straight from the equations; RLOO literally leaves one out."""
    n_groups, group_size = rewards.shape
    adv = np.zeros((n_groups, group_size))
    zero_std = np.zeros(n_groups, bool)
    ok = valid & np.isfinite(rewards)
    for p in range(n_groups):
        idx = np.flatnonzero(ok[p])
        r = rewards[p, idx].astype(np.float64)
        if len(idx) >= 1 and np.all(r == r[0]):
            zero_std[p] = True
            continue
        if len(idx) < 2:
            continue
        if mode == "grpo":
            adv[p, idx] = (r - r.mean()) / (r.std(ddof=ddof) + eps)
        elif mode == "dr_grpo":
            adv[p, idx] = r - r.mean()
        else:
            adv[p, idx] = [r[i] - np.delete(r, i).mean() for i in range(len(r))]
    if batch_normalize:
        a = adv[ok]
        adv = np.where(ok, adv / (a.std(ddof=ddof) + eps), 0.0)
    return adv, zero_std


def make_batch(n_groups, group_size, seed):
    """Binary-ish rewards (as accuracy rewards are) with every degenerate group kind planted."""
    rng = np.random.default_rng(seed)
    rewards = rng.choice([0.0, 0.5, 1.0, 1.25], size=(n_groups, group_size)).astype(np.float32)
    rewards += rng.normal(scale=0.1, size=rewards.shape).astype(np.float32) * (rng.random() > 0.5)
    valid = rng.random((n_groups, group_size)) > 0.2
    rewards[0] = 1.0  # all equal
    valid[0] = True
    rewards[1] = 0.1  # all equal, and 0.1 is not exact in f32: mean != 0.1 in general
    valid[1] = True
    valid[2] = False  # empty
    valid[3] = False  # one valid sample
    valid[3, 1] = True
    rewards[4, :2] = [np.nan, np.inf]  # non-finite rewards count as invalid
    valid[4] = True
    valid[5] = False  # exactly two valid samples, different
    valid[5, :2] = True
    rewards[5, :2] = [0.0, 1.0]
    return rewards, valid


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(37, 6), (16, 16)])  # P not a multiple of 8, G not 2^k
def test_matches_oracle(shape, mode, impl):
    rewards, valid = make_batch(*shape, seed=shape[0])
    out = grouped_advantages(jnp.asarray(rewards), jnp.asarray(valid), mode=mode, **IMPLS[impl])
    want, want_zero_std = oracle(rewards, valid, mode, eps=1e-4, ddof=1)
    adv = np.asarray(out.advantages_PxG)
    assert adv.shape == shape and adv.dtype == np.float32
    assert np.all(np.isfinite(adv))
    np.testing.assert_allclose(adv, want, atol=2e-5, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(out.zero_std_P), want_zero_std)
    assert int(out.num_zero_std_groups) == want_zero_std.sum() >= 3  # groups 0, 1 and 3
    ok = valid & np.isfinite(rewards)
    np.testing.assert_array_equal(np.asarray(out.num_valid_P), ok.sum(axis=1))
    for p in np.flatnonzero(ok.sum(axis=1) >= 2):
        r = rewards[p, ok[p]].astype(np.float64)
        np.testing.assert_allclose(out.mean_P[p], r.mean(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(out.std_P[p], r.std(ddof=1), rtol=1e-5, atol=1e-6)
    # Invariant: every group's advantages sum to zero (each mode centers on a group baseline).
    np.testing.assert_allclose(adv.sum(axis=1), 0.0, atol=1e-4)


def test_tpu_interpret_mode_and_batch_normalization(tpu_interpret):
    rewards, valid = make_batch(37, 6, seed=3)
    out = grouped_advantages(jnp.asarray(rewards), jnp.asarray(valid), mode="dr_grpo", ddof=0,
                             batch_normalize=True, impl="pallas_tpu",
                             block_sizes=AdvantageBlockSizes(8), interpret=tpu_interpret.params)
    want, want_zero_std = oracle(rewards, valid, "dr_grpo", eps=1e-4, ddof=0, batch_normalize=True)
    np.testing.assert_allclose(np.asarray(out.advantages_PxG), want, atol=2e-5, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(out.zero_std_P), want_zero_std)


def test_race_detector_can_fire(tpu_interpret):
    """The fixture's check is live: every parallel grid step writing one block is a race."""
    if not tpu_interpret.recording:
        pytest.skip("this jax version hides the race detector's state (see conftest.py)")
    tpu_interpret.expect_race = True
    racy = pl.pallas_call(
        lambda x_ref, o_ref: o_ref.__setitem__(..., x_ref[...] * 2.0),
        grid=(4,),
        in_specs=[pl.BlockSpec((8, 128), lambda i: (i, 0))],
        out_specs=pl.BlockSpec((8, 128), lambda i: (0, 0)),
        out_shape=jax.ShapeDtypeStruct((8, 128), jnp.float32),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",)),
        interpret=tpu_interpret.params)
    racy(jnp.ones((32, 128), jnp.float32)).block_until_ready()
    assert tpu_interpret.races_found()


def test_jit_and_all_valid_default():
    rewards, _ = make_batch(16, 16, seed=5)
    f = jax.jit(lambda r: grouped_advantages(r, mode="grpo", impl="pallas_tpu", interpret=True))
    out = f(jnp.asarray(rewards))
    want, _ = oracle(rewards, np.ones(rewards.shape, bool), "grpo", eps=1e-4, ddof=1)
    np.testing.assert_allclose(np.asarray(out.advantages_PxG), want, atol=2e-5, rtol=1e-5)


def test_pallas_gpu_lowers_to_triton():
    """No GPU here: lower for CUDA, which runs the Pallas -> Triton IR lowering (not ptxas)."""
    f = jax.jit(lambda r, v: grouped_advantages(r, v, impl="pallas_gpu"))
    lowered = f.trace(jax.ShapeDtypeStruct((1000, 12), jnp.float32),
                      jax.ShapeDtypeStruct((1000, 12), jnp.bool_)).lower(
                          lowering_platforms=("cuda",))
    assert "__gpu$xla.gpu.triton" in lowered.as_text()


def test_bad_arguments_raise():
    rewards = jnp.zeros((4, 8))
    with pytest.raises(ValueError, match="mode"):
        grouped_advantages(rewards, mode="ppo")
    with pytest.raises(ValueError, match="valid"):
        grouped_advantages(rewards, jnp.ones((4, 7), bool))
    with pytest.raises(ValueError, match="block_p"):
        grouped_advantages(rewards, impl="pallas_tpu", block_sizes=AdvantageBlockSizes(12))
    with pytest.raises(ValueError, match="block_p"):
        grouped_advantages(rewards, impl="pallas_gpu", block_sizes=AdvantageBlockSizes(24))
    with pytest.raises(ValueError, match="impl"):
        grouped_advantages(rewards, impl="xla_chunked")
