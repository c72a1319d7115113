"""The paged engine: the same tokens as the lockstep engine whatever the slots, pool or shards;
greedy = teacher-forced argmax; log-probs = a full forward; stops, budgets, preemption, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import models, rollout
from r1jax.rollout import paged, prompt_pages
from r1jax.sharding import Sharding, make_mesh

CFG = models.ModelConfig(vocab_size=48, hidden_size=64, intermediate_size=96, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=16, model_type="qwen2",
                         qkv_bias=True, tie_embeddings=False, max_position_embeddings=256)
# Ragged prompts, one longer than a page and one exactly a page (page_size 4 below).
PROMPTS = [[5, 17, 33], [7, 3, 12, 5, 8, 21, 40, 1, 4], [44], [9, 9, 10, 11]]
STOP = (2, 3)  # with a 48-token vocabulary the rows stop at very different lengths


@pytest.fixture(scope="module")
def params():
    return models.init(CFG, jax.random.key(0))


def _generate(params, engine, paged=None, **kwargs):
    base = dict(rng=jax.random.key(3), max_new_tokens=40, group_size=3, temperature=1.0,
                stop_ids=STOP)
    if engine == "paged":
        base.update(page_size=4, **(paged or {}))
    return rollout.generate(params, CFG, PROMPTS, engine=engine, **{**base, **kwargs})


def _same(a, b):
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    np.testing.assert_array_equal(np.asarray(a.lengths), np.asarray(b.lengths))
    np.testing.assert_array_equal(np.asarray(a.stopped), np.asarray(b.stopped))
    np.testing.assert_array_equal(np.asarray(a.mask), np.asarray(b.mask))
    np.testing.assert_allclose(np.asarray(a.logprobs), np.asarray(b.logprobs), atol=1e-5)


@pytest.fixture(scope="module")
def lockstep(params):
    out = _generate(params, "lockstep")
    lengths = np.asarray(out.lengths)
    assert len(set(lengths.tolist())) > 4 and lengths.max() > 12  # a real spread of lengths
    return out


@pytest.mark.parametrize("slots, pages", [(12, 0), (5, 0), (1, 0), (6, 18)])
def test_tokens_do_not_depend_on_slots_or_pool_and_equal_lockstep(params, lockstep, slots, pages):
    out = _generate(params, "paged", paged=dict(decode_slots=slots, kv_pages=pages))
    _same(out, lockstep)
    assert int(out.kv_tokens_peak) <= out.kv_tokens
    if pages:  # the prompts take 6 pages, a sample up to 10: slots wait, samples restart
        assert int(out.preemptions) > 0
    else:  # the default pool never runs dry
        assert int(out.preemptions) == 0
    if slots < 12 and not pages:  # fewer slots than samples: slots reused, and kept busy
        assert int(out.decode_steps) > int(lockstep.decode_steps)
        assert int(out.slot_steps) < int(lockstep.slot_steps)


def test_greedy_equals_lockstep_and_the_teacher_forced_argmax(params):
    kw = dict(temperature=0.0, stop_ids=(), max_new_tokens=12)
    out = _generate(params, "paged", paged=dict(decode_slots=5), **kw)
    _same(out, _generate(params, "lockstep", **kw))
    for row, tokens in enumerate(np.asarray(out.tokens)):
        prompt = PROMPTS[row // 3]
        seq = jnp.asarray([prompt + tokens.tolist()])
        logits = np.asarray(models.logits(CFG, params, seq))[0]
        np.testing.assert_array_equal(tokens, logits[len(prompt) - 1:-1].argmax(-1))


def test_logprobs_equal_a_full_forward(params):
    out = _generate(params, "paged", paged=dict(decode_slots=4), temperature=0.8)
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    logprobs = np.asarray(out.logprobs)
    for p, prompt in enumerate(PROMPTS):
        rows = range(3 * p, 3 * p + 3)  # the prompt's G samples in one forward (causal: the
        seq = jnp.asarray([prompt + tokens[row].tolist() for row in rows])  # padding is after)
        logits = np.asarray(models.logits(CFG, params, seq))[:, len(prompt) - 1:-1] / 0.8
        expected = np.asarray(jax.nn.log_softmax(jnp.asarray(logits), axis=-1))
        for i, row in enumerate(rows):
            n = lengths[row]
            picked = np.take_along_axis(expected[i], tokens[row, :, None], axis=-1)[:n, 0]
            np.testing.assert_allclose(logprobs[row, :n], picked, atol=1e-5, rtol=1e-5)
            assert (logprobs[row, n:] == 0).all() and (tokens[row, n:] == 0).all()


def test_sample_budgets_cap_each_row_in_both_engines(params):
    budgets = [1, 2, 7, 40, 3, 5, 9, 11, 1, 20, 4, 6]
    a = _generate(params, "lockstep", sample_budgets=budgets, stop_ids=())
    b = _generate(params, "paged", sample_budgets=budgets, stop_ids=(),
                  paged=dict(decode_slots=3))
    _same(a, b)
    np.testing.assert_array_equal(np.asarray(a.lengths), budgets)
    assert not np.asarray(a.stopped).any()  # out of budget is not a stop


def test_stop_strings_are_cut_as_in_lockstep(params):
    class Chars:
        """Token i is the character chr(65 + i % 26)."""

        def encode(self, text):
            return [ord(c) - 65 for c in text]

        def decode(self, ids, skip_special=False):
            return "".join(chr(65 + int(i) % 26) for i in ids)

    kw = dict(stop_ids=(), stop_strings=("D",), tokenizer=Chars())
    a, b = _generate(params, "lockstep", **kw), _generate(params, "paged", **kw)
    _same(a, b)
    assert np.asarray(b.stopped).any()


def test_sharded_paged_rollout_equals_single_device(params, lockstep):
    sharding = Sharding(make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
    params_s = jax.device_put(params, models.param_shardings(CFG, sharding))
    out = _generate(params_s, "paged", sharding=sharding, paged=dict(decode_slots=4))
    assert len(out.tokens.sharding.device_set) == 8
    _same(out, lockstep)


def test_prompt_pages_hold_the_prefill_cache_and_are_shared(params):
    prompt_PxL = jnp.asarray([[0, 0, 5, 17, 33], [7, 3, 12, 5, 8]])
    mask_PxL = jnp.asarray([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    plan = paged.plan(2, 5, 3, 10, decode_slots=2, page_size=2)
    _, cache, _ = prompt_pages.prefill(CFG, params, prompt_PxL, mask_PxL, chunk=2)
    pools, table_PxM, pages_P, used = prompt_pages.pages_of_prompts(CFG, cache, mask_PxL.sum(1), plan)
    assert pages_P.tolist() == [2, 3] and int(used) == 5
    whole = models.forward(CFG, params, prompt_PxL, attention_mask_BxL=mask_PxL,
                           cache=models.init_cache(CFG, 2, 5)).cache
    for layer, (k_pool, _) in enumerate(pools):
        for p, n in enumerate([3, 5]):
            pages = np.asarray(table_PxM[p, :pages_P[p]])
            keys_KxLxE = np.asarray(k_pool[:, pages]).reshape(CFG.num_kv_heads, -1, CFG.head_dim)
            dense_KxLxE = np.asarray(whole.keys[layer][p])[:, 5 - n:]
            np.testing.assert_allclose(keys_KxLxE[:, :n], dense_KxLxE, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(kv_pages=12), "kv_pages=12 is too small"),
    (dict(decode_slots=3, sharding="4 shards"), "does not split over 4"),
    (dict(page_size=0), "page_size"),
])
def test_bad_pool_settings_fail_clearly(kwargs, match):
    shards = 4 if kwargs.pop("sharding", None) else 1
    with pytest.raises(ValueError, match=match):
        paged.plan(4, 16, 3, 40, shards=shards, **{"page_size": 4, **kwargs})


def test_unknown_engine_and_bad_budgets_fail_clearly(params):
    with pytest.raises(ValueError, match="engine must be"):
        _generate(params, "dense")
    with pytest.raises(ValueError, match="sample_budgets must be 12 integers"):
        _generate(params, "paged", sample_budgets=[41] * 12)
