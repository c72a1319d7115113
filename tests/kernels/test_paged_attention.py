"""ragged_paged_attention: every impl against a float64 numpy oracle that reads the page table
literally, plus the TPU kernel compiled ahead of time for a real TPU with libtpu.

Invalid data is poisoned: table entries past a sequence's pages name a page of NaN (or of 1e30),
and the invalid slots of used pages (past kv_len, inside the hole) hold NaN, so a missing mask
shows up as a non-finite output.  In TPU interpret mode those entries are even out of range, and
the interpreter raises on an out-of-bounds DMA: the kernel never copies an unused page.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import ragged_paged_attention
from kernels.paged_attention import resolve_impl

F32_TOL = 1e-5  # abs and rel
BF16_TOL = 2e-2  # p is rounded to bf16 before p @ v, and the output is bf16


# ----------------------------------------------------------------------------- the oracle


def oracle(q, k_pages, v_pages, page_table, kv_lens, hole_start):
    """float64, one sequence at a time: list the valid positions, look each one up, attend."""
    q, k_pages, v_pages = (np.asarray(x, np.float64) for x in (q, k_pages, v_pages))
    num_seqs, kv_heads, num_queries, head_dim = q.shape
    page_size = k_pages.shape[2]
    out = np.zeros(q.shape)
    for s in range(num_seqs):
        hole_end = -(-int(hole_start[s]) // page_size) * page_size
        keys, values = [], []
        for i in range(int(kv_lens[s])):
            if hole_start[s] <= i < hole_end:
                continue
            page, offset = page_table[s, i // page_size], i % page_size
            keys.append(k_pages[:, page, offset, :])  # [K, E]
            values.append(v_pages[:, page, offset, :])
        if not keys:
            continue  # idle slot: output 0
        keys, values = np.stack(keys, axis=1), np.stack(values, axis=1)  # [K, n, E]
        for h in range(kv_heads):
            scores = q[s, h] @ keys[h].T  # [Q, n]
            p = np.exp(scores - scores.max(axis=1, keepdims=True))
            out[s, h] = (p / p.sum(axis=1, keepdims=True)) @ values[h]
    return out


# ----------------------------------------------------------------------------- cases


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    kv_lens: tuple
    hole_start: tuple  # None: no hole (hole_start = kv_len)
    kv_heads: int = 2
    num_queries: int = 4
    head_dim: int = 128
    page_size: int = 8
    max_pages: int = 6
    shared_prompt: int = 0  # sequences 0 .. G-1 share the pages of a prompt this long
    group: int = 0
    dtype: str = "float32"


CASES = {
    # GQA; idle slot, a single token, exact page multiples, mid-page holes, a full table.
    "gqa_ragged": Case("gqa_ragged", kv_lens=(0, 1, 8, 16, 29, 48),
                       hole_start=(None, None, None, 16, 11, 21)),
    # One query head per kv head; hole on the first page, a length ending inside a hole's page.
    "mha": Case("mha", kv_lens=(5, 19, 0, 40), hole_start=(3, 4, None, 9), num_queries=1,
                kv_heads=3),
    # G = 3 samples of a 13-token prompt share its two pages; 3 slots of page 2 are the hole.
    # One sample has generated nothing yet (kv_len = hole_start: nothing past the prompt).
    "shared_prompt": Case("shared_prompt", kv_lens=(13, 17, 38, 7), hole_start=(13, 13, 13, None),
                          shared_prompt=13, group=3),
    "bf16": Case("bf16", kv_lens=(0, 1, 16, 29, 48, 33), hole_start=(None, None, None, 11, 21, 5),
                 page_size=16, max_pages=4, dtype="bfloat16"),
}


def make_inputs(case, seed=0, garbage="nan"):
    """Random pools with permuted page assignment; unused table entries name the ``garbage`` page.

    ``garbage``: "nan" or "huge" (a page of that, in range), "zero" (page 0, the common default),
    or "out_of_range" (an id no pool has: only a kernel that never reads it can take it).
    """
    rng = np.random.default_rng(seed)
    num_seqs, p = len(case.kv_lens), case.page_size
    kv_lens = np.array(case.kv_lens, np.int32)
    holes = np.array([n if h is None else h for n, h in zip(case.kv_lens, case.hole_start)],
                     np.int32)
    shared = -(-case.shared_prompt // p)
    num_pages = num_seqs * case.max_pages + 2  # every sequence could own M pages; + 2 garbage
    ids = iter(rng.permutation(num_pages - 2))
    prompt_pages = [next(ids) for _ in range(shared)]
    table = np.zeros((num_seqs, case.max_pages), np.int32)
    used = [-(-int(n) // p) for n in kv_lens]
    for s in range(num_seqs):
        for j in range(used[s]):
            table[s, j] = prompt_pages[j] if s < case.group and j < shared else next(ids)
    nan_page, huge_page = num_pages - 2, num_pages - 1
    for s in range(num_seqs):
        table[s, used[s]:] = {"nan": nan_page, "huge": huge_page, "zero": 0,
                              "out_of_range": 2**30}[garbage]
    shape = (case.kv_heads, num_pages, p, case.head_dim)
    k_pages, v_pages = rng.normal(size=shape), rng.normal(size=shape)
    for pages in (k_pages, v_pages):
        pages[:, nan_page], pages[:, huge_page] = np.nan, 1e30
        # Invalid slots of used pages (past kv_len, inside the hole) are NaN too.
        for s in range(num_seqs):
            hole_end = -(-int(holes[s]) // p) * p
            for i in range(used[s] * p):
                if i >= kv_lens[s] or holes[s] <= i < hole_end:
                    if not (s < case.group and i < case.shared_prompt):
                        pages[:, table[s, i // p], i % p] = np.nan
    # ~2x the usual 1/sqrt(E) scale: a peaked softmax that still mixes several positions.
    q = rng.normal(size=(num_seqs, case.kv_heads, case.num_queries, case.head_dim))
    q *= 2.0 / np.sqrt(case.head_dim)
    dtype = jnp.dtype(case.dtype)
    # The oracle sees exactly the (rounded) values the kernels see.
    return (jnp.asarray(q, dtype), jnp.asarray(k_pages, dtype), jnp.asarray(v_pages, dtype),
            jnp.asarray(table), jnp.asarray(kv_lens), jnp.asarray(holes))


def assert_matches_oracle(case, out, inputs):
    q, k_pages, v_pages, table, kv_lens, holes = inputs
    assert out.shape == q.shape and out.dtype == q.dtype
    got = np.asarray(out, np.float64)
    assert np.all(np.isfinite(got)), f"{case.name}: non-finite output"
    for s, n in enumerate(case.kv_lens):
        if n == 0:
            assert np.all(got[s] == 0), f"{case.name}: idle slot {s} is not 0"
    tol = F32_TOL if case.dtype == "float32" else BF16_TOL
    want = oracle(q, k_pages, v_pages, np.asarray(table), np.asarray(kv_lens), np.asarray(holes))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=case.name)


IMPLS = {
    "reference": dict(impl="reference"),
    "xla": dict(impl="xla"),
    # Two pages per block: several blocks per sequence, a partial last block.
    "pallas_tpu": dict(impl="pallas_tpu", interpret=True, pages_per_block=2),
}


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("case_name", list(CASES))
def test_matches_float64_oracle(case_name, impl):
    case = CASES[case_name]
    inputs = make_inputs(case)
    assert_matches_oracle(case, ragged_paged_attention(*inputs, **IMPLS[impl]), inputs)


@pytest.mark.parametrize("pages_per_block", [1, 4, None])  # 4 does not divide M = 6
def test_pallas_tpu_block_sizes(pages_per_block):
    case = CASES["gqa_ragged"]
    inputs = make_inputs(case, seed=2)
    out = ragged_paged_attention(*inputs, impl="pallas_tpu", interpret=True,
                                 pages_per_block=pages_per_block)
    assert_matches_oracle(case, out, inputs)


@pytest.mark.parametrize("case_name", ["gqa_ragged", "bf16"])
def test_pallas_tpu_in_tpu_interpret_mode(case_name, tpu_interpret):
    """Simulated TPU: NaN-filled VMEM scratch (stale slots of the last block read NaN), DMAs
    checked against the pool's bounds, two cores running the parallel sequence axis."""
    case = CASES[case_name]
    inputs = make_inputs(case, seed=1, garbage="out_of_range")
    out = ragged_paged_attention(*inputs, impl="pallas_tpu", interpret=tpu_interpret.params,
                                 pages_per_block=2)
    assert_matches_oracle(case, out, inputs)


def test_tpu_interpret_mode_catches_a_read_of_an_out_of_range_page(tpu_interpret):
    """The control for the test above: an out-of-range id in a *used* entry does fail."""
    q, k_pages, v_pages, table, kv_lens, holes = make_inputs(CASES["mha"], seed=1)
    table = table.at[1, 2].set(2**30)  # sequence 1 (19 tokens) uses pages 0..2
    with pytest.raises(Exception, match="Out-of-bounds"):
        jax.block_until_ready(ragged_paged_attention(
            q[:2], k_pages, v_pages, table[:2], kv_lens[:2], holes[:2], impl="pallas_tpu",
            interpret=tpu_interpret.params, pages_per_block=2))


@pytest.mark.parametrize("impl", list(IMPLS))
def test_unused_table_entries_do_not_change_the_output(impl):
    case = CASES["gqa_ragged"]
    outs = []
    for garbage in ("nan", "huge", "zero"):
        inputs = make_inputs(case, seed=3, garbage=garbage)
        outs.append(np.asarray(ragged_paged_attention(*inputs, **IMPLS[impl])))
    # Bit for bit: a masked position must contribute exactly nothing, not merely little.
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


# Multi-head Latent Attention: one kv head of 576-wide entries (latent 512 + rope key 64) that
# are keys and values both, read by all of a layer's query heads.
LATENT = Case("latent", kv_lens=(0, 1, 16, 29, 48, 33), hole_start=(None, None, 16, 11, 21, 5),
              kv_heads=1, num_queries=16, head_dim=576)


@pytest.mark.parametrize("impl", list(IMPLS))
def test_keys_as_values_match_the_oracle(impl):
    """``v_pages=None``: the key pages are the values (each page read once)."""
    q, k_pages, _, table, kv_lens, holes = make_inputs(LATENT, seed=4)
    out = ragged_paged_attention(q, k_pages, None, table, kv_lens, holes, **IMPLS[impl])
    assert_matches_oracle(LATENT, out, (q, k_pages, k_pages, table, kv_lens, holes))


def test_keys_as_values_in_tpu_interpret_mode(tpu_interpret):
    q, k_pages, _, table, kv_lens, holes = make_inputs(LATENT, seed=5, garbage="out_of_range")
    out = ragged_paged_attention(q, k_pages, None, table, kv_lens, holes, impl="pallas_tpu",
                                 interpret=tpu_interpret.params, pages_per_block=2)
    assert_matches_oracle(LATENT, out, (q, k_pages, k_pages, table, kv_lens, holes))


def test_shared_pages_give_each_sample_its_own_attention():
    """Sharing couples nothing: a sample attends the same next to the samples that share its
    prompt pages as alone, and samples with one query but different lengths differ."""
    case = CASES["shared_prompt"]
    q, k_pages, v_pages, table, kv_lens, holes = make_inputs(case)
    q = jnp.broadcast_to(q[:1], q.shape)  # the same query everywhere
    out = np.asarray(ragged_paged_attention(q, k_pages, v_pages, table, kv_lens, holes,
                                            impl="xla"))
    alone = np.asarray(ragged_paged_attention(q[:1], k_pages, v_pages, table[:1], kv_lens[:1],
                                              holes[:1], impl="xla"))
    np.testing.assert_allclose(out[0], alone[0], rtol=1e-6, atol=1e-6)
    assert not np.allclose(out[0], out[1])


def test_xla_under_jit_in_a_while_loop():
    """The rollout engine's pattern: one call per decode step, lengths carried by the loop."""
    case = CASES["gqa_ragged"]
    q, k_pages, v_pages, table, kv_lens, holes = make_inputs(case)

    @jax.jit
    def decode(kv_lens):
        def body(carry):
            step, lens, acc = carry
            out = ragged_paged_attention(q, k_pages, v_pages, table, lens, holes)
            return step + 1, lens, acc + out.astype(jnp.float32)
        return jax.lax.while_loop(lambda c: c[0] < 3, body, (0, kv_lens, jnp.zeros(q.shape)))[2]

    want = 3 * oracle(q, k_pages, v_pages, np.asarray(table), np.asarray(kv_lens),
                      np.asarray(holes))
    np.testing.assert_allclose(np.asarray(decode(kv_lens)), want, rtol=3e-5, atol=3e-5)


def test_auto_picks_xla_on_cpu():
    assert resolve_impl("auto") == "xla"


def test_bad_arguments_raise():
    q, k_pages, v_pages, table, kv_lens, holes = make_inputs(CASES["mha"])
    args = (q, k_pages, v_pages, table, kv_lens, holes)
    call = ragged_paged_attention
    with pytest.raises(ValueError, match="impl"):
        call(*args, impl="cuda")
    with pytest.raises(ValueError, match=r"\[S, K, Q, E\]"):
        call(q[0], *args[1:])
    with pytest.raises(ValueError, match="differ"):
        call(q, k_pages, v_pages[:, :-1], *args[3:])
    with pytest.raises(ValueError, match="K="):
        call(q[:, :1], *args[1:])
    with pytest.raises(ValueError, match="page_table"):
        call(q, k_pages, v_pages, table[:-1], kv_lens, holes)
    with pytest.raises(ValueError, match="kv_lens"):
        call(*args[:4], kv_lens[:-1], holes)
    with pytest.raises(ValueError, match="integers"):
        call(*args[:4], kv_lens.astype(jnp.float32), holes)
    with pytest.raises(ValueError, match="dtype"):
        call(q.astype(jnp.bfloat16), *args[1:])
    with pytest.raises(ValueError, match="dtype"):
        call(q.astype(jnp.float16), k_pages.astype(jnp.float16), v_pages.astype(jnp.float16),
             *args[3:])
    with pytest.raises(ValueError, match="pages_per_block"):
        call(*args, impl="pallas_tpu", interpret=True, pages_per_block=0)
    with pytest.raises(ValueError, match="exceeds"):
        call(*args, impl="pallas_tpu", interpret=True, pages_per_block=7)
    with pytest.raises(ValueError, match="multiple of 8"):
        call(q, k_pages[:, :, :4], v_pages[:, :, :4], *args[3:], impl="pallas_tpu",
             interpret=True)
    big = jnp.zeros((512, 1024), jnp.int32)
    with pytest.raises(ValueError, match="SMEM"):
        call(jnp.zeros((512,) + q.shape[1:]), k_pages, v_pages, big, jnp.zeros(512, jnp.int32),
             jnp.zeros(512, jnp.int32), impl="pallas_tpu", interpret=True)


# ----------------------------------------------------------------------------- TPU, ahead of time


@pytest.fixture(scope="module")
def tpu_device_mesh():
    """One v5e chip from libtpu's topology, as in test_kernels_tpu_aot.py; nothing runs."""
    pytest.importorskip("libtpu", reason="libtpu is not installed (pip install 'jax[tpu]')")
    from jax.experimental import topologies
    topology = topologies.get_topology_desc(platform="tpu", topology_name="v5e:2x2")
    return jax.sharding.Mesh(np.array(topology.devices[:1]), ("data",))


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_pallas_tpu_compiles_for_tpu_without_copying_the_pools(tpu_device_mesh, dtype):
    """A decode step at serving size: 64 slots, 8 kv heads x 4 query heads, E = 128, 16-token
    pages, a 2048-page pool and 128 pages (2048 tokens) per sequence."""
    num_seqs, kv_heads, num_queries, head_dim = 64, 8, 4, 128
    num_pages, page_size, max_pages = 2048, 16, 128
    replicated = jax.sharding.NamedSharding(tpu_device_mesh, jax.sharding.PartitionSpec())

    def arg(shape, dt):
        return jax.ShapeDtypeStruct(shape, dt, sharding=replicated)

    pool = arg((kv_heads, num_pages, page_size, head_dim), dtype)
    f = jax.jit(lambda *a: ragged_paged_attention(*a, impl="pallas_tpu"))
    compiled = f.lower(arg((num_seqs, kv_heads, num_queries, head_dim), dtype), pool, pool,
                       arg((num_seqs, max_pages), jnp.int32), arg((num_seqs,), jnp.int32),
                       arg((num_seqs,), jnp.int32)).compile()
    assert "ragged_paged_attention" in compiled.as_text()
    # No relayout copy of a pool (each is 32-64 MiB here): the kernel reads them in place.
    pool_bytes = kv_heads * num_pages * page_size * head_dim * jnp.dtype(dtype).itemsize
    assert compiled.memory_analysis().temp_size_in_bytes < pool_bytes / 16


def test_pallas_tpu_keys_as_values_compiles_for_tpu_reading_one_pool(tpu_device_mesh):
    """DeepSeek-V3's decode attention: 64 slots, one kv head of 576-wide latent entries for 16
    query heads (128 over 8 tensor shards), 16-token pages, 256 pages per sequence (4k): one
    pool, one DMA per page, and XLA's cost model sees half the bytes of a two-pool call.
    (Passed as an argument, a 576-wide pool of some shapes is laid out again, padded to 640
    lanes, and copied: the module docstring's caveat; the paged engine's pools are made inside
    its program, laid out that way from the start.)"""
    num_seqs, num_queries, width, page_size, max_pages, num_pages = 64, 16, 576, 16, 256, 4096
    replicated = jax.sharding.NamedSharding(tpu_device_mesh, jax.sharding.PartitionSpec())

    def arg(shape, dt):
        return jax.ShapeDtypeStruct(shape, dt, sharding=replicated)

    q = arg((num_seqs, 1, num_queries, width), "bfloat16")
    pool = arg((1, num_pages, page_size, width), "bfloat16")
    meta = (arg((num_seqs, max_pages), jnp.int32), arg((num_seqs,), jnp.int32),
            arg((num_seqs,), jnp.int32))
    one = jax.jit(lambda q, k, *m: ragged_paged_attention(q, k, None, *m, impl="pallas_tpu"))
    two = jax.jit(lambda *a: ragged_paged_attention(*a, impl="pallas_tpu"))
    shared = one.lower(q, pool, *meta).compile()
    separate = two.lower(q, pool, pool, *meta).compile()
    assert "ragged_paged_attention" in shared.as_text()
    pool_bytes = num_pages * page_size * width * 2
    assert shared.memory_analysis().temp_size_in_bytes < pool_bytes / 16
    assert shared.memory_analysis().argument_size_in_bytes < \
        separate.memory_analysis().argument_size_in_bytes - pool_bytes / 2
    bytes_of = lambda c: c.cost_analysis()["bytes accessed"]  # noqa: E731
    assert bytes_of(shared) < 0.6 * bytes_of(separate)
