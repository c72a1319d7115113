"""The SFT step: packed = unpacked, response-only loss, gradient vs an independent reference,
microbatches = one batch, sharded = single device, the non-finite guard."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import models, sft
from r1jax.rl import OptimConfig, init_train_state, make_optimizer
from r1jax.sharding import Sharding, make_mesh

CFG = models.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=8, model_type="qwen2",
                         qkv_bias=True, tie_embeddings=True, max_position_embeddings=64)
# A large Adam eps: float32 noise on a near-zero gradient cannot then flip a sign-like update, so
# differently ordered sums (microbatches, shards) give updates equal to float32 tolerance.
SFT = sft.SFTConfig(optim=OptimConfig(learning_rate=1e-2, eps=1e-3))


def _examples(seed, count=6):
    rng = np.random.default_rng(seed)
    return [(rng.integers(1, CFG.vocab_size, rng.integers(1, 6)).tolist(),
             rng.integers(1, CFG.vocab_size, rng.integers(2, 7)).tolist()) for _ in range(count)]


@pytest.fixture(scope="module")
def params():
    return jax.jit(lambda k: models.init(CFG, k))(jax.random.key(0))


@jax.jit
def _reference_token_logp(params, tokens_ExL, mask_ExL):
    """``log p(token t+1 | tokens ≤ t)`` from full, materialized logits of right-padded examples."""
    logits = models.logits(CFG, params, tokens_ExL, mask_ExL)
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    return jnp.take_along_axis(logp, tokens_ExL[:, 1:, None], axis=-1)[..., 0]


def _reference_loss(params, examples):
    """Per-example -mean log p(response): each example alone (unpacked, right-padded)."""
    width = max(len(p) + len(r) for p, r in examples)
    tokens = np.zeros((len(examples), width), np.int32)
    mask = np.zeros_like(tokens)
    weights = np.zeros((len(examples), width - 1), np.float32)
    for i, (prompt, response) in enumerate(examples):
        n = len(prompt) + len(response)
        tokens[i, :n], mask[i, :n] = prompt + response, 1
        weights[i, len(prompt) - 1:n - 1] = 1.0  # positions whose next token is a response token
    logp = _reference_token_logp(params, jnp.asarray(tokens), jnp.asarray(mask))
    return -jnp.sum(logp * weights, axis=1) / jnp.sum(weights, axis=1)


_token_logprobs = jax.jit(sft.token_logprobs, static_argnums=0)


def test_packed_batch_gives_the_per_example_losses_of_unpacked_examples(params):
    examples = _examples(0)
    packed = sft.pack_examples(examples, 16)
    assert packed.num_rows < len(examples)  # really packed
    logp = _token_logprobs(CFG, params, sft.SFTBatch.from_rows(packed))
    packed_losses = sft.per_example_losses(np.asarray(logp), packed, len(examples))
    alone = []
    for example in examples:
        rows = sft.pack_examples([example], 16)
        logp_i = _token_logprobs(CFG, params, sft.SFTBatch.from_rows(rows))
        alone.append(sft.per_example_losses(np.asarray(logp_i), rows, 1)[0])
    np.testing.assert_allclose(packed_losses, alone, rtol=1e-5)
    np.testing.assert_allclose(packed_losses, _reference_loss(params, examples), rtol=1e-5)


@jax.jit
def _loss(params, batch):
    logp_sum, _ = sft.weighted_logprob_sum(CFG, params, batch)
    return -logp_sum / jnp.sum(batch.loss_weights_BxL)


def test_loss_counts_response_tokens_only(params):
    batch = sft.SFTBatch.from_rows(sft.pack_examples(_examples(1), 16))
    base = float(_loss(params, batch))
    unweighted = batch.loss_weights_BxL == 0
    # Any target at a position without loss weight (prompt tokens, segment ends, padding).
    scrambled = batch.replace(targets_BxL=jnp.where(unweighted, (batch.targets_BxL + 7) % 64,
                                                    batch.targets_BxL))
    assert float(_loss(params, scrambled)) == base
    changed = batch.replace(targets_BxL=jnp.where(unweighted, batch.targets_BxL,
                                                  (batch.targets_BxL + 7) % 64))
    assert float(_loss(params, changed)) != pytest.approx(base, rel=1e-3)
    # The mean over all examples' response tokens, as a reference computes it.
    examples = _examples(1)
    counts = np.array([len(r) for _, r in examples], np.float64)
    ref = _reference_loss(params, examples)
    assert base == pytest.approx(float(np.sum(np.asarray(ref) * counts) / counts.sum()), rel=1e-5)


def test_gradient_equals_an_independent_reference_and_finite_differences(params):
    examples = _examples(2, count=3)
    batch = sft.SFTBatch.from_rows(sft.pack_examples(examples, 24))
    counts = jnp.asarray([len(r) for _, r in examples], jnp.float32)

    def reference(p):  # materialized logits, each example unpacked
        return jnp.sum(_reference_loss(p, examples) * counts) / jnp.sum(counts)

    value, grads = jax.jit(jax.value_and_grad(_loss))(params, batch)
    ref_value, ref_grads = jax.value_and_grad(reference)(params)
    assert float(value) == pytest.approx(float(ref_value), rel=1e-5)
    jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, atol=2e-6, rtol=1e-4),
                 grads, ref_grads)
    # Central finite difference along a random direction (host numpy: no per-shape compiles).
    rng = np.random.default_rng(3)
    host = jax.tree.map(np.asarray, params)
    direction = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), host)
    eps = 1e-3
    shifted = lambda s: jax.tree.map(lambda p, d: p + s * eps * d, host, direction)  # noqa: E731
    numeric = (float(_loss(shifted(1), batch)) - float(_loss(shifted(-1), batch))) / (2 * eps)
    analytic = sum(float(np.vdot(np.asarray(g), d)) for g, d in
                   zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
    assert analytic == pytest.approx(numeric, rel=2e-2)


_STEPS = {}  # compiled steps shared by the tests (one compile per config and placement)


def _step(cfg, state, sharding):
    key = (cfg, sharding is None)
    if key not in _STEPS:
        _STEPS[key] = sft.make_sft_step(cfg, CFG, make_optimizer(cfg.optim), state, sharding)
    return _STEPS[key]


def _run(cfg, batches, params, sharding=None):
    if sharding is not None:
        params = jax.device_put(params, models.param_shardings(CFG, sharding))
    state = init_train_state(params, make_optimizer(cfg.optim))
    step = _step(cfg, state, sharding)
    metrics = []
    for batch in batches:
        state, m = step(state, batch)
        metrics.append(jax.tree.map(float, m))
    return state, metrics


def _batch(seed, rows=8):
    packed = sft.pack_examples(_examples(seed, count=12), 16)
    return sft.SFTBatch.from_rows(next(sft.iterate_batches(packed, rows)))


def test_microbatches_accumulate_to_the_same_update(params):
    batches = [_batch(4), _batch(5)]
    whole, m1 = _run(SFT, batches, params)
    split, m2 = _run(sft.SFTConfig(optim=SFT.optim, num_microbatches=4), batches, params)
    # Two Adam steps amplify float32 summation-order differences a little.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), split.params,
                 whole.params)
    assert [m["loss"] for m in m2] == pytest.approx([m["loss"] for m in m1], rel=1e-5)
    assert m1[0]["skipped"] == 0 and int(whole.step) == 2


def test_bounded_loss_tokens_give_the_same_loss_and_count_what_they_drop(params):
    batch = _batch(6)
    score = jax.jit(sft.weighted_logprob_sum, static_argnums=0,
                    static_argnames="max_loss_tokens")
    full, _ = score(CFG, params, batch)
    count = int(jnp.sum(batch.loss_weights_BxL != 0))
    bounded, dropped = score(CFG, params, batch, max_loss_tokens=count + 3)
    assert float(bounded) == pytest.approx(float(full), rel=1e-5) and int(dropped) == 0
    _, dropped = score(CFG, params, batch, max_loss_tokens=count - 2)
    assert int(dropped) == 2


def test_sharded_step_equals_single_device(params):
    batches = [_batch(7), _batch(8)]
    single, m1 = _run(SFT, batches, params)
    sharding = Sharding(make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
    sharded, m2 = _run(SFT, batches, params, sharding)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), sharded.params,
                 single.params)
    assert m2[-1]["loss"] == pytest.approx(m1[-1]["loss"], rel=1e-4)


def test_nonfinite_update_is_skipped(params):
    good = _batch(9)
    bad = good.replace(loss_weights_BxL=good.loss_weights_BxL.at[0, 1].set(jnp.nan))
    state = init_train_state(params, make_optimizer(SFT.optim))
    step = _step(SFT, state, None)
    state, _ = step(state, good)
    before = jax.tree.map(np.asarray, state.params)
    state, m = step(state, bad)
    assert int(m["skipped"]) == 1 and int(state.skipped_updates) == 1
    assert int(state.consecutive_skips) == 1
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state.params), before)
