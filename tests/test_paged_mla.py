"""The paged engine on Multi-head Latent Attention (DeepSeek-V3): its pages and slot rows hold each
token's latent and rope key once, and it samples what the lockstep engine over the latent cache
samples (tokens, stops, log-probs = a full forward, the experts each token was routed to), with
slot rows, with an overcommitted pool that preempts, and on 8 sharded devices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from r1jax import models, rollout
from r1jax.rollout import paged, prompt_pages, shards
from r1jax.sharding import Sharding, make_mesh

# tiny-deepseek (q LoRA, YaRN, sigmoid group-limited routing, a shared expert, the first layer
# dense) with a 48-token vocabulary, so that the stops below end rows at very different lengths.
CFG = models.get_config("tiny-deepseek").replace(vocab_size=48, num_layers=3)
PROMPTS = [[5, 17, 33], [7, 3, 12, 5, 8, 21, 40, 1, 4], [44], [9, 9, 10, 11]]
STOP = (2, 3)
WIDTH = CFG.kv_lora_rank + CFG.qk_rope_head_dim


@pytest.fixture(scope="module")
def params():
    return models.init(CFG, jax.random.key(0))


def _generate(params, engine, **kwargs):
    base = dict(rng=jax.random.key(3), max_new_tokens=24, group_size=3, temperature=1.0,
                stop_ids=STOP, record_experts=True)
    if engine == "paged":
        base["page_size"] = 4
    return rollout.generate(params, CFG, PROMPTS, engine=engine, **{**base, **kwargs})


@pytest.fixture(scope="module")
def lockstep(params):
    out = _generate(params, "lockstep")
    lengths = np.asarray(out.lengths)
    assert len(set(lengths.tolist())) > 4 and lengths.min() < 12  # a real spread of lengths
    return out


def _same(a, b):
    for name in ("tokens", "lengths", "stopped", "mask", "prompt_experts"):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)),
                                      err_msg=name)
    # Experts of the fed tokens (the last sampled token of a row is never fed back).
    fed = np.asarray(b.mask).copy()
    fed[np.arange(fed.shape[0]), np.asarray(b.lengths) - 1] = False
    np.testing.assert_array_equal(np.asarray(a.experts)[fed], np.asarray(b.experts)[fed])
    np.testing.assert_allclose(np.asarray(a.logprobs), np.asarray(b.logprobs), atol=1e-5)


@pytest.mark.parametrize("slots, pages", [(5, 0), (6, 18)])
def test_paged_latent_cache_samples_what_lockstep_samples(params, lockstep, slots, pages):
    """(5, 0): slot rows (the default pool on CPU); (6, 18): pages throughout, overcommitted."""
    out = _generate(params, "paged", decode_slots=slots, kv_pages=pages)
    _same(out, lockstep)
    assert (int(out.preemptions) > 0) == bool(pages)


def test_logprobs_equal_a_full_forward(params, lockstep):
    out = _generate(params, "paged", decode_slots=4)
    tokens, lengths, logprobs = (np.asarray(x) for x in (out.tokens, out.lengths, out.logprobs))
    # Every row in one forward, each its prompt then its completion, padded after (causal).
    width = max(map(len, PROMPTS)) + tokens.shape[1]
    seq = np.zeros((tokens.shape[0], width), np.int32)
    for row, toks in enumerate(tokens):
        prompt = PROMPTS[row // 3]
        seq[row, :len(prompt) + len(toks)] = prompt + toks.tolist()
    logits = np.asarray(models.logits(CFG, params, jnp.asarray(seq)), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    for row, n in enumerate(lengths):
        start = len(PROMPTS[row // 3]) - 1
        want = logp[row, start:start + n][np.arange(n), tokens[row, :n]]
        np.testing.assert_allclose(logprobs[row, :n], want, atol=1e-4)


def test_sharded_paged_latent_rollout_equals_single_device(params, lockstep):
    sharding = Sharding(make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
    params_s = jax.device_put(params, models.param_shardings(CFG, sharding))
    out = _generate(params_s, "paged", sharding=sharding, decode_slots=4)
    assert len(out.tokens.sharding.device_set) == 8
    _same(out, lockstep)


def test_pages_hold_each_latent_entry_once(params):
    """One pool per layer, ``[1, N, P, R + Er]``, and no key pool: token j's entry is its latent
    and rope key from the prefill's latent cache."""
    prompt_PxL = jnp.asarray([[0, 0, 5, 17, 33], [7, 3, 12, 5, 8]])
    mask_PxL = jnp.asarray([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    plan = paged.plan(2, 5, 3, 10, decode_slots=2, page_size=2)

    @jax.jit
    def pages_of_prompts(params):
        _, cache, _ = prompt_pages.prefill(CFG, params, prompt_PxL, mask_PxL, chunk=2)
        return cache, prompt_pages.pages_of_prompts(CFG, cache, mask_PxL.sum(1), plan)

    cache, (pools, table_PxM, pages_P, _) = pages_of_prompts(params)
    assert len(pools) == CFG.num_layers
    for layer, (keys, entries) in enumerate(pools):
        assert keys is None and entries.shape == (1, plan.kv_pages, 2, WIDTH)
        for p, n in enumerate([3, 5]):
            pages = np.asarray(table_PxM[p, :pages_P[p]])
            got_LxC = np.asarray(entries[0, pages]).reshape(-1, WIDTH)[:n]
            want_LxC = np.concatenate([np.asarray(cache.latents[layer][p]),
                                       np.asarray(cache.rope_keys[layer][p])], axis=-1)[5 - n:]
            np.testing.assert_array_equal(got_LxC, want_LxC)


def test_expert_parallel_paged_rollout_equals_single_device(params, lockstep):
    """An ``expert`` axis of 4 (the rows over it and ``data``): each device holds only its two
    experts inside the engine's ``shard_map`` and the four loops of an expert group step together,
    exchanging their tokens in every MoE layer; the samples and their routing are the
    single-device ones, and the program holds a quarter of the expert weights per device."""
    # Rows over expert (and tensor idle): each device's loop gathers its group's tokens; rows
    # over data only (4 prompts do not split 8 ways): the group's loops share their tokens.
    for mesh, slots, pages in [({"expert": 4, "tensor": 2}, 8, 0),
                               ({"expert": 4, "tensor": 2}, 8, 40),  # overcommitted: preempts
                               ({"data": 2, "expert": 4}, 4, 0)]:
        sharding = Sharding(make_mesh(mesh))
        specs = shards.expert_param_specs(CFG, sharding, params)
        assert specs["layers"]["moe"]["gate_kernel"] == P(None, "expert")
        assert specs["layers"]["moe"]["router_kernel"] == P()
        params_s = jax.device_put(params, models.param_shardings(CFG, sharding))
        out = _generate(params_s, "paged", sharding=sharding, decode_slots=slots, kv_pages=pages)
        assert len(out.tokens.sharding.device_set) == 8
        _same(out, lockstep)
        assert (int(out.preemptions) > 0) == bool(pages)


def test_expert_param_specs_keep_everything_whole_unless_experts_split(params):
    """No ``expert`` axis, a dense model, or a tree laid out otherwise: every weight whole (None)."""
    split = Sharding(make_mesh({"data": 2, "expert": 4}))
    assert shards.expert_param_specs(CFG, Sharding(make_mesh({"data": 8})), params) is None
    dense = models.get_config("tiny")
    assert shards.expert_param_specs(dense, split, models.init(dense, jax.random.key(0))) is None
    assert shards.expert_param_specs(CFG, split, {"layers": params["layers"]}) is None
    specs = shards.expert_param_specs(CFG, split, params)
    assert specs["layers"]["moe"]["down_kernel"] == P(None, "expert")
    assert specs["layers"]["moe"]["shared_down_kernel"] == P()
    assert specs["embedding"] == P()
