"""The GRPO update step: sharded = single device, microbatching, guards, and 2 processes × 4 devices."""
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import models
from r1jax.rl import (GRPOBatch, GRPOConfig, LossConfig, OptimConfig, completion_logprobs,
                      grpo_loss, init_train_state, make_grpo_step, make_optimizer)
from r1jax.sharding import Sharding, make_mesh

CFG = models.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=8, model_type="qwen2",
                         qkv_bias=True, tie_embeddings=True)
PROMPT, COMPLETION, ROWS = 5, 6, 8


def make_batch(seed, with_old=False):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, CFG.vocab_size, (ROWS, PROMPT + COMPLETION)).astype(np.int32)
    mask = np.ones_like(tokens)
    mask[::3, :2] = 0
    lengths = rng.integers(2, COMPLETION + 1, ROWS)
    completion_mask = (np.arange(COMPLETION)[None] < lengths[:, None]).astype(np.int32)
    mask[:, PROMPT:] = completion_mask
    adv = rng.normal(size=ROWS).astype(np.float32)
    old = (-rng.uniform(1, 5, (ROWS, COMPLETION))).astype(np.float32) if with_old else None
    return GRPOBatch(jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(completion_mask),
                     jnp.asarray(adv), None if old is None else jnp.asarray(old))


def run_steps(cfg, batches, sharding=None, ref_seed=1):
    if sharding is None:
        params = jax.jit(lambda r: models.init(CFG, r))(jax.random.key(0))
        ref = jax.jit(lambda r: models.init(CFG, r))(jax.random.key(ref_seed))
    else:
        params = models.init_sharded(CFG, jax.random.key(0), sharding)
        ref = models.init_sharded(CFG, jax.random.key(ref_seed), sharding)
    optimizer = make_optimizer(cfg.optim)
    state = init_train_state(params, optimizer)
    step = make_grpo_step(cfg, CFG, optimizer, state, sharding)
    metrics = []
    for batch in batches:
        state, m = step(state, batch, ref if cfg.loss.beta > 0 else None)
        metrics.append(jax.tree.map(float, m))
    return state, metrics


GRPO = GRPOConfig(loss=LossConfig(beta=0.04), optim=OptimConfig(learning_rate=1e-2))


def test_step_loss_equals_the_pure_loss_on_full_logprobs():
    batch = make_batch(0, with_old=True)
    state, (m,) = run_steps(GRPO, [batch])
    params = jax.jit(lambda r: models.init(CFG, r))(jax.random.key(0))
    ref = jax.jit(lambda r: models.init(CFG, r))(jax.random.key(1))
    logp, _ = completion_logprobs(CFG, params, batch.tokens_BxL, batch.attention_mask_BxL,
                                  COMPLETION)
    ref_logp, _ = completion_logprobs(CFG, ref, batch.tokens_BxL, batch.attention_mask_BxL,
                                      COMPLETION)
    loss, metrics = grpo_loss(logp, batch.old_logp_BxT, ref_logp, batch.advantages_B,
                              batch.completion_mask_BxT, GRPO.loss)
    assert m["loss"] == pytest.approx(float(loss), rel=1e-5)
    assert m["kl"] == pytest.approx(float(metrics["kl"]), rel=1e-5)
    assert int(state.step) == 1 and m["skipped"] == 0 and m["grad_norm"] > 0


def test_sharded_step_equals_single_device():
    batches = [make_batch(0), make_batch(1, with_old=True)]
    single, m1 = run_steps(GRPO, batches)
    sharding = Sharding(make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
    sharded, m2 = run_steps(GRPO, batches, sharding)
    assert sharded.params["layers"]["mlp"]["up_kernel"].sharding.spec == \
        jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5),
                 sharded.params, single.params)
    assert m2[-1]["loss"] == pytest.approx(m1[-1]["loss"], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "token-mean"])
def test_microbatches_accumulate_to_the_same_update(agg):
    cfg = GRPOConfig(loss=LossConfig(beta=0.04, loss_agg=agg), optim=OptimConfig(1e-2))
    batches = [make_batch(2, with_old=True)]
    whole, m1 = run_steps(cfg, batches)
    split, m2 = run_steps(GRPOConfig(loss=cfg.loss, optim=cfg.optim, num_microbatches=4), batches)
    # The gradient itself (its norm) must agree closely. Adam divides each entry by its own
    # magnitude, so an entry near zero may move by a visible fraction of the learning rate under
    # a different summation order: the parameters are compared at 1% of the step size.
    assert m2[0]["grad_norm"] == pytest.approx(m1[0]["grad_norm"], rel=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4),
                 split.params, whole.params)
    assert m2[0]["loss"] == pytest.approx(m1[0]["loss"], rel=1e-5)
    assert m2[0]["ratio_min"] == pytest.approx(m1[0]["ratio_min"], rel=1e-5)


def test_beta_zero_needs_no_reference_and_nonfinite_updates_are_skipped():
    cfg = GRPOConfig(loss=LossConfig(beta=0.0), optim=OptimConfig(1e-2))
    good, bad = make_batch(3), make_batch(4)
    bad = bad.replace(advantages_B=bad.advantages_B.at[0].set(jnp.nan))
    params = jax.jit(lambda r: models.init(CFG, r))(jax.random.key(0))
    optimizer = make_optimizer(cfg.optim)
    state = init_train_state(params, optimizer)
    step = make_grpo_step(cfg, CFG, optimizer, state)
    state, m = step(state, good, None)
    before = jax.tree.map(np.asarray, state.params)
    state, m = step(state, bad, None)
    assert m["skipped"] == 1 and int(state.skipped_updates) == 1
    assert int(state.consecutive_skips) == 1 and int(state.step) == 2
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state.params), before)
    state, m = step(state, good, None)
    assert m["skipped"] == 0 and int(state.consecutive_skips) == 0


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_of_four_devices_equal_one_process(tmp_path):
    """jax.distributed over 127.0.0.1 (gloo): 2 processes × 4 CPU devices run two GRPO steps whose
    parameters equal a single process with 8 devices."""
    worker = os.path.join(os.path.dirname(__file__), "multihost_worker.py")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    port = _free_port()
    multi = tmp_path / "multi.npz"
    procs = [subprocess.Popen([sys.executable, worker, "--devices", "4", "--num-processes", "2",
                               "--process-id", str(i), "--port", str(port), "--out", str(multi)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(2)]
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
    single = tmp_path / "single.npz"
    done = subprocess.run([sys.executable, worker, "--devices", "8", "--out", str(single)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = np.load(multi), np.load(single)
    assert set(a.files) == set(b.files) and len(a.files) > 5
    for key in a.files:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5, err_msg=key)
