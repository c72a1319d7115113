"""The paged engine's slot-row layout (``r1jax.rollout.slot_cache``) against a float64 numpy
oracle: attention over shared prompt pages plus a slot's own row, with every position it must
not read poisoned (NaN keys, NaN or huge values), and writes that keep a later sample safe."""
import jax.numpy as jnp
import numpy as np

from r1jax import models
from r1jax.rollout import slot_cache

S, K, Q, E, P = 5, 2, 3, 8, 4  # slots, kv heads, queries per kv head, head dim, page size


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    prompt_len = np.array([1, 4, 7, 9, 3])
    prompt_pages = 3
    num_pages = 16
    k_pages = rng.normal(size=(K, num_pages, P, E)).astype(np.float32)
    v_pages = rng.normal(size=(K, num_pages, P, E)).astype(np.float32)
    table = np.zeros((S, prompt_pages), np.int32)
    for s in range(S):
        used = -(-prompt_len[s] // P)
        table[s, :used] = rng.choice(num_pages - 1, used, replace=False)
        table[s, used:] = num_pages - 1  # a page no prompt owns
        # The prompt's hole (past its length on its last page) holds garbage.
        last, offset = table[s, used - 1], prompt_len[s] % P
        if offset:
            k_pages[:, last, offset:] = np.nan
            v_pages[:, last, offset:] = 1e30
    k_pages[:, num_pages - 1] = np.nan
    v_pages[:, num_pages - 1] = np.nan
    positions = 6
    last = np.array([-1, 0, 3, 5, 2])  # slot 0 has no generated token yet
    keys = rng.normal(size=(S, K, E, positions)).astype(np.float32)
    values = rng.normal(size=(S, K, positions, E)).astype(np.float32)
    for s in range(S):  # a previous sample's stale row: NaN keys, huge (finite) values
        keys[s, :, :, last[s] + 1:] = np.nan
        values[s, :, last[s] + 1:] = 1e30
    q = rng.normal(size=(S, K, Q, E)).astype(np.float32)
    return q, k_pages, v_pages, table, prompt_len, keys, values, last


def _oracle(q, k_pages, v_pages, table, prompt_len, keys, values, last):
    out = np.zeros(q.shape, np.float64)
    for s in range(S):
        ks, vs = [], []
        for i in range(prompt_len[s]):
            ks.append(k_pages[:, table[s, i // P], i % P])
            vs.append(v_pages[:, table[s, i // P], i % P])
        for j in range(last[s] + 1):
            ks.append(keys[s, :, :, j])
            vs.append(values[s, :, j])
        k_LxKxE = np.asarray(ks, np.float64)
        v_LxKxE = np.asarray(vs, np.float64)
        for h in range(K):
            scores = k_LxKxE[:, h] @ q[s, h].astype(np.float64).T  # [L, Q]
            w = np.exp(scores - scores.max(axis=0))
            out[s, h] = (w / w.sum(axis=0)).T @ v_LxKxE[:, h]
    return out


def test_prefix_slot_attention_equals_float64_oracle_and_never_reads_garbage():
    inputs = _inputs()
    q, k_pages, *rest = (jnp.asarray(x) for x in inputs)
    got = slot_cache.prefix_slot_attention(q, slot_cache.transpose_key_pages(k_pages), *rest)
    assert np.isfinite(np.asarray(got)).all()
    np.testing.assert_allclose(np.asarray(got), _oracle(*inputs), rtol=1e-5, atol=1e-5)


def test_idle_slot_gives_zero():
    q, k_pages, v_pages, table, prompt_len, keys, values, last = _inputs(1)
    prompt_len[2], last[2] = 0, -1
    got = slot_cache.prefix_slot_attention(*(jnp.asarray(x) for x in (
        q, k_pages.swapaxes(2, 3), v_pages, table, prompt_len, keys, values, last)))
    np.testing.assert_array_equal(np.asarray(got[2]), 0.0)


def test_writes_land_at_each_slots_position_finite_and_idle_slots_write_nothing():
    cfg = models.ModelConfig(vocab_size=16, hidden_size=16, intermediate_size=16, num_layers=1,
                             num_heads=K * Q, num_kv_heads=K, head_dim=E)
    keys, values = slot_cache.init_slot_rows(cfg, S, 4)[0]
    keys, values = slot_cache.grow_slot_rows(keys, values, 6)
    assert keys.shape == (S, K, E, 6) and values.shape == (S, K, 6, E)
    rng = np.random.default_rng(2)
    k_new = rng.normal(size=(S, K, E)).astype(np.float32)
    v_new = rng.normal(size=(S, K, E)).astype(np.float32)
    v_new[3, 1, 2] = np.nan
    at = np.array([0, 5, 2, 1, 6])  # slot 4 is idle: a position past the row
    keys, values = slot_cache.write_slot_rows(keys, values, jnp.asarray(k_new),
                                              jnp.asarray(v_new), jnp.asarray(at))
    keys, values = np.asarray(keys), np.asarray(values)
    want_v = np.where(np.isfinite(v_new), v_new, 0.0)
    for s in range(4):
        np.testing.assert_array_equal(keys[s, :, :, at[s]], k_new[s])
        np.testing.assert_array_equal(values[s, :, at[s]], want_v[s])
    assert np.count_nonzero(keys[4]) == 0 and np.count_nonzero(values[4]) == 0
    assert np.isfinite(values).all()
    assert np.count_nonzero(keys) == 4 * K * E  # nothing else written
