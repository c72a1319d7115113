"""Rollout engine: greedy = teacher-forced argmax, log-prob parity, nucleus sampling, sharding, stops."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import models, rollout
from r1jax.rollout.lockstep import compiled_rollout
from r1jax.rollout.sampling import SamplingParams, inverse_cdf_sample, nucleus_mask, sample
from r1jax.rollout.stops import stop_string_cut
from r1jax.sharding import Sharding, make_mesh

CFG = models.ModelConfig(vocab_size=96, hidden_size=64, intermediate_size=96, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=16, model_type="qwen2",
                         qkv_bias=True, tie_embeddings=False, max_position_embeddings=128)
PROMPTS = [[5, 17, 33], [7, 3, 12, 5, 8, 21, 60, 1, 4], [44], [9, 9, 10, 11, 12]]


@pytest.fixture(scope="module")
def params():
    # Scaled-up weights: peaked distributions, so argmax ties cannot flip a comparison.
    p = models.init(CFG, jax.random.key(0))
    return jax.tree.map(lambda x: x * 6 if x.ndim > 1 else x, p)


def _full_logits(params, prompt, completion):
    seq = jnp.asarray([list(prompt) + list(completion)])
    return np.asarray(models.logits(CFG, params, seq))[0]


def test_greedy_is_the_argmax_of_the_teacher_forced_forward(params):
    out = rollout.generate(params, CFG, PROMPTS, rng=jax.random.key(0), max_new_tokens=12,
                           temperature=0.0)
    tokens = np.asarray(out.tokens)
    assert tokens.shape == (4, 12) and np.asarray(out.mask).all()
    for prompt, completion in zip(PROMPTS, tokens):
        logits = _full_logits(params, prompt, completion)
        predicted = logits[len(prompt) - 1:-1].argmax(-1)
        np.testing.assert_array_equal(completion, predicted)


def test_batch_of_different_lengths_equals_each_prompt_alone(params):
    batch = rollout.generate(params, CFG, PROMPTS, rng=jax.random.key(0), max_new_tokens=10,
                             temperature=0.0)
    for i, prompt in enumerate(PROMPTS):
        alone = rollout.generate(params, CFG, [prompt], rng=jax.random.key(0), max_new_tokens=10,
                                 temperature=0.0)
        np.testing.assert_array_equal(np.asarray(batch.tokens)[i], np.asarray(alone.tokens)[0])


@pytest.mark.parametrize("temperature, top_p, top_k", [(1.0, 1.0, 0), (0.7, 0.9, 0),
                                                       (1.3, 1.0, 20)])
def test_sampled_logprobs_equal_a_full_forward(params, temperature, top_p, top_k):
    out = rollout.generate(params, CFG, PROMPTS, rng=jax.random.key(3), max_new_tokens=10,
                           group_size=3, temperature=temperature, top_p=top_p, top_k=top_k)
    tokens, logprobs = np.asarray(out.tokens), np.asarray(out.logprobs)
    assert tokens.shape == (12, 10)
    for row in range(12):
        prompt = PROMPTS[row // 3]  # rows are prompt-major: p * G + g
        logits = _full_logits(params, prompt, tokens[row])[len(prompt) - 1:-1] / temperature
        expected = jax.nn.log_softmax(jnp.asarray(logits), axis=-1)
        expected = np.take_along_axis(np.asarray(expected), tokens[row][:, None], -1)[:, 0]
        np.testing.assert_allclose(logprobs[row], expected, atol=1e-5, rtol=1e-5)
    # The G samples of one prompt differ (each row draws its own tokens).
    assert len({tuple(t) for t in tokens[:3]}) > 1


def _nucleus_reference(logits, top_k, top_p):
    """float64 numpy: sort, keep the top k, then the smallest prefix reaching top_p."""
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    keep = np.zeros_like(probs, bool)
    if top_k:
        keep[order[:top_k]] = True
        keep |= probs >= probs[order[top_k - 1]]  # ties with the k-th
    else:
        keep[:] = True
    kept = np.where(keep, probs, 0) / np.where(keep, probs, 0).sum()
    sorted_kept = kept[order]
    before = np.cumsum(sorted_kept) - sorted_kept
    last = order[np.nonzero(before < top_p)[0][-1]]
    return keep & (kept >= kept[last])


@pytest.mark.parametrize("top_k, top_p", [(0, 0.9), (10, 1.0), (25, 0.6), (0, 0.05)])
def test_nucleus_mask_matches_a_sorting_reference(top_k, top_p):
    rng = np.random.default_rng(top_k)
    logits = rng.normal(size=(16, 300)) * 2
    ours = np.asarray(nucleus_mask(jnp.exp(jnp.asarray(logits, jnp.float32)
                                           - logits.max(-1, keepdims=True)),
                                   SamplingParams(1.0, top_p, top_k)))
    for row in range(16):
        np.testing.assert_array_equal(ours[row], _nucleus_reference(logits[row], top_k, top_p))


def test_sampling_frequencies_and_no_token_outside_the_nucleus():
    probs = np.array([0.30, 0.25, 0.15, 0.12, 0.08, 0.05, 0.03, 0.02])
    logits = jnp.asarray(np.log(probs), jnp.float32)[None].repeat(4096, axis=0)
    params = SamplingParams(temperature=1.0, top_p=0.8, top_k=0)  # nucleus: first 4 (0.82)
    draws = np.concatenate([np.asarray(sample(jax.random.key(s), logits, params)[0])
                            for s in range(8)])
    counts = np.bincount(draws, minlength=8)
    assert counts[4:].sum() == 0
    expected = probs[:4] / probs[:4].sum()
    freq = counts[:4] / counts.sum()
    # 32768 draws: standard error <= 0.003; allow 5 sigma.
    np.testing.assert_allclose(freq, expected, atol=0.015)
    top_k = SamplingParams(temperature=1.0, top_p=1.0, top_k=2)
    draws = np.asarray(sample(jax.random.key(9), logits, top_k)[0])
    assert set(np.unique(draws)) == {0, 1}
    np.testing.assert_allclose((draws == 0).mean(), 0.30 / 0.55, atol=0.03)


def test_inverse_cdf_never_picks_a_zero_weight_token():
    weights = jnp.asarray([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0], [1.0, 0.0, 1.0, 0.0]])
    for u in (0.0, 0.5, 0.999999, 1.0 - 2**-24):
        picks = np.asarray(inverse_cdf_sample(jnp.full((3,), u, jnp.float32), weights))
        assert picks[0] == 1 and picks[1] == 3 and picks[2] in (0, 2)


@pytest.mark.parametrize("vocab", [300, 512, 5000])
def test_inverse_cdf_matches_float64_search_across_blocks(vocab):
    rng = np.random.default_rng(vocab)
    weights = rng.exponential(size=(4, vocab)) * (rng.random((4, vocab)) < 0.7)
    weights[1, : vocab // 2] = 0.0  # whole empty blocks before the mass
    u = np.concatenate([rng.random(252), [0.0, 0.5, 1 - 2**-24, 0.999]]).astype(np.float32)
    picks = np.stack([np.asarray(inverse_cdf_sample(jnp.full((4,), x), jnp.asarray(weights,
                                                                                   jnp.float32)))
                      for x in u], axis=1)
    cdf = np.cumsum(weights.astype(np.float32).astype(np.float64), axis=1)
    for row in range(4):
        target = u.astype(np.float64) * cdf[row, -1]
        expected = np.searchsorted(cdf[row], target, side="right")
        # float32 rounding may move a draw across a boundary only when it lies that close to one.
        near = np.abs(cdf[row][np.minimum(expected, vocab - 1)] - target) < 1e-5 * cdf[row, -1]
        near |= np.abs(cdf[row][np.maximum(expected - 1, 0)] - target) < 1e-5 * cdf[row, -1]
        assert np.all((picks[row] == expected) | near), (row, picks[row], expected)
        assert np.all(weights[row, picks[row]] > 0)


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_sharded_rollout_equals_single_device(params, temperature):
    # 8 prompts x G=2 = 16 rows over data x fsdp = 4 shards; on CPU each shard decodes in its own
    # loop and stops on its own (stop ids make rows end at different steps).
    prompts = PROMPTS * 2
    kwargs = dict(rng=jax.random.key(7), max_new_tokens=8, group_size=2, temperature=temperature,
                  stop_ids=(3, 5, 7, 11))
    single = rollout.generate(params, CFG, prompts, **kwargs)
    sharding = Sharding(make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
    params_s = jax.device_put(params, models.param_shardings(CFG, sharding))
    sharded = rollout.generate(params_s, CFG, prompts, sharding=sharding, **kwargs)
    assert len(sharded.tokens.sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(sharded.tokens), np.asarray(single.tokens))
    np.testing.assert_array_equal(np.asarray(sharded.lengths), np.asarray(single.lengths))
    np.testing.assert_allclose(np.asarray(sharded.logprobs), np.asarray(single.logprobs),
                               atol=1e-5, rtol=1e-5)
    assert int(sharded.decode_steps) == int(single.decode_steps)
    if temperature:
        assert len(set(np.asarray(single.lengths).tolist())) > 1  # the stops did fire


def test_stop_ids_end_rows_early_and_mask_the_rest(params):
    greedy = rollout.generate(params, CFG, PROMPTS, rng=jax.random.key(0), max_new_tokens=12,
                              temperature=0.0)
    first = np.asarray(greedy.tokens)
    stop = int(first[1, 3])  # row 1 emits this token at step 3
    out = rollout.generate(params, CFG, PROMPTS, rng=jax.random.key(0), max_new_tokens=12,
                           temperature=0.0, stop_ids=[stop], pad_id=0)
    tokens, lengths, mask = map(np.asarray, (out.tokens, out.lengths, out.mask))
    for row in range(4):
        hits = np.nonzero(first[row] == stop)[0]
        expected_len = hits[0] + 1 if len(hits) else 12
        assert lengths[row] == expected_len
        np.testing.assert_array_equal(tokens[row, :expected_len], first[row, :expected_len])
        assert (tokens[row, expected_len:] == 0).all() and not mask[row, expected_len:].any()
        assert mask[row, :expected_len].all()
        assert np.asarray(out.logprobs)[row, expected_len:].sum() == 0
    assert bool(np.asarray(out.stopped)[1]) and lengths[1] == 4
    # The loop itself ends once every row has stopped.
    everyone = int(first[0, 0]) if (first[:, 0] == first[0, 0]).all() else None
    stops_all = [int(t) for t in first[:, 1]]
    early = rollout.generate(params, CFG, PROMPTS, rng=jax.random.key(0), max_new_tokens=12,
                             temperature=0.0, stop_ids=stops_all + ([everyone] if everyone else []))
    assert int(early.decode_steps) <= 2 < 12


class _CharTokenizer:
    """Each id i is the character chr(97 + i % 26); enough to spell stop strings."""

    def encode(self, text):
        return [ord(c) - 97 for c in text]

    def decode(self, ids, skip_special=False):
        return "".join(chr(97 + int(i) % 26) for i in ids)


def test_stop_strings_cut_on_the_host(params):
    tok = _CharTokenizer()
    greedy = rollout.generate(params, CFG, PROMPTS, rng=jax.random.key(0), max_new_tokens=12,
                              temperature=0.0)
    text = tok.decode(np.asarray(greedy.tokens)[2])
    stop = text[4:6]  # a two-character string completed at token 6 of row 2
    out = rollout.generate(params, CFG, PROMPTS, rng=jax.random.key(0), max_new_tokens=12,
                           temperature=0.0, stop_strings=[stop], tokenizer=tok)
    lengths = np.asarray(out.lengths)
    assert lengths[2] <= 6 and stop in tok.decode(np.asarray(out.tokens)[2][:lengths[2]])
    assert stop not in tok.decode(np.asarray(out.tokens)[2][:lengths[2] - 1])
    assert stop_string_cut(tok.decode, [0, 1, 2, 3], ["cd"]) == 4
    assert stop_string_cut(tok.decode, [0, 1, 2, 3], ["zz"]) is None


def test_prompt_lengths_share_one_compiled_bucket(params):
    compiled_rollout.cache_clear()
    for prompt in ([1, 2, 3, 4, 5], list(range(1, 10)), [7] * 16):  # all in bucket 16
        rollout.generate(params, CFG, [prompt], rng=jax.random.key(0), max_new_tokens=4)
    assert compiled_rollout.cache_info().currsize == 1
    (fn,) = [f for f in [compiled_rollout(CFG, SamplingParams(), rollout.StopCriteria(), 1, 4, 0,
                                          None, True, False)]]
    assert fn._cache_size() == 1


def test_new_key_new_samples_same_key_same_samples(params):
    kw = dict(max_new_tokens=10, group_size=2)
    a = rollout.generate(params, CFG, PROMPTS, rng=jax.random.key(1), **kw)
    b = rollout.generate(params, CFG, PROMPTS, rng=jax.random.key(1), **kw)
    c = rollout.generate(params, CFG, PROMPTS, rng=jax.random.key(2), **kw)
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    assert not np.array_equal(np.asarray(a.tokens), np.asarray(c.tokens))


@pytest.mark.parametrize("kwargs, match", [
    (dict(prompts=[[1, 2], []]), "prompt 1 is empty"),
    (dict(prompts=[list(range(1, 100))], max_new_tokens=40), "exceeds the cache limit of 128"),
    (dict(group_size=0), "group_size must be >= 1"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(temperature=-1.0), "temperature must be >= 0"),
    (dict(stop_strings=["</answer>"]), "need the tokenizer"),
])
def test_bad_input_fails_before_compiling(params, kwargs, match):
    compiled_rollout.cache_clear()
    prompts = kwargs.pop("prompts", PROMPTS)
    args = dict(rng=jax.random.key(0), max_new_tokens=4) | kwargs
    with pytest.raises(ValueError, match=match):
        rollout.generate(params, CFG, prompts, **args)
    assert compiled_rollout.cache_info().currsize == 0


def test_cpu_and_accelerator_decode_paths_sample_the_same(params):
    kw = dict(rng=jax.random.key(5), max_new_tokens=9, group_size=2, temperature=1.0)
    lean = rollout.generate(params, CFG, PROMPTS, unstack_params=True, **kw)
    plain = rollout.generate(params, CFG, PROMPTS, unstack_params=False, **kw)
    np.testing.assert_array_equal(np.asarray(lean.tokens), np.asarray(plain.tokens))
    np.testing.assert_allclose(np.asarray(lean.logprobs), np.asarray(plain.logprobs), atol=1e-5)


def test_one_new_token_needs_no_decode_step(params):
    out = rollout.generate(params, CFG, PROMPTS, rng=jax.random.key(0), max_new_tokens=1,
                           temperature=0.0)
    for prompt, completion in zip(PROMPTS, np.asarray(out.tokens)):
        assert completion[0] == _full_logits(params, prompt, [])[-1].argmax()
    assert int(out.decode_steps) == 1
