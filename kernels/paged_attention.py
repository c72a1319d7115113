"""Ragged paged attention for decode: one query token per sequence over a paged KV cache.

Sequence s's keys and values are virtual positions i = 0 .. M*P-1; position i lives at offset
``i % P`` of page ``page_table_SxM[s, i // P]`` of the pool ``k_pages_KxNxPxE`` (and ``v``).
Position i is valid iff ``i < kv_lens_S[s]`` and not ``hole_start <= i < round_up(hole_start, P)``:
the hole is the unwritten tail of a prompt's last page, shared by the G samples of that prompt,
whose generated tokens start on a fresh page.  Then, per kv head k and each of its Q query heads,

    out = softmax_valid(q . k) @ v        (f32 softmax; no 1/sqrt(E): the caller folds it into q)

Without v pages (``v_pages=None``) the key pages are the values too: Multi-head Latent Attention
attends with one head whose entries (latent and rope key) are both, and each page is then read
once (one DMA, one VMEM buffer on TPU).  An idle slot (kv_len 0) gives 0.  Entries of a page table past ``ceil(kv_len / P)`` are never
used: whatever pages they name, and whatever those pages hold (NaN included), the output is the
same.  Three implementations:

  reference   plain jnp in f32 over all M*P positions; for tests.
  xla         one vectorized gather of the S*M table pages, masked einsums, f32 softmax; the
              default on CPU and GPU.  Its cost is proportional to M, not to the real lengths.
  pallas_tpu  Mosaic kernel, grid (S,) "parallel" (megacore splits the sequences).  The page
              table, lengths and hole bounds are scalar-prefetched into SMEM; the pools stay in
              HBM.  Step s walks its ``cdiv(kv_len, P)`` pages in blocks of ``pages_per_block``
              with ``lax.fori_loop``: block b+1 is DMAed (one copy per page and pool, all K heads
              at once) into the other half of a double-buffered VMEM scratch while block b is
              scored, and an online softmax keeps the running max / sum / accumulator per
              (head, query) in f32 VMEM.  Only the pages a sequence uses are copied (an idle slot
              copies none); the last block's slots past the length keep stale data, which a
              select (not an added bias: NaN must go too) removes from the scores and, in the
              blocks that hold an invalid position, from v (0 * NaN would survive the matmul).
              The first block of each sequence is not overlapped with the previous sequence.

TPU constraints (checked by ``ragged_paged_attention``): P a multiple of 8, so every page lands on
whole (8, 128) tiles at its row offset in the block buffer (AOT-compiled for f32 and bf16 on v4,
v5e, v5p, v6e); E is free (under 128 it is lane-padded in VMEM); the flattened page table and
the lengths, about 4 (S M + 3 S) bytes, must fit in SMEM (1 MiB).  The kernel wants the pools in
row-major HBM layout: with E < 128 XLA may give a jit argument another default layout and copy
the whole pool to call the kernel, so keep the pools inside the jitted decode loop.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from kernels import block_sizes as bs
from kernels.logprob_tpu import vmem_capacity_bytes

IMPLS = ("auto", "xla", "pallas_tpu", "reference")
_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


def _precision(dtype):
    # f32 operands must not become single bf16 MXU passes; bf16 ones are exact in f32 anyway.
    return lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else lax.Precision.DEFAULT


def _hole_end(hole_start_S, page_size):
    return -(-hole_start_S // page_size) * page_size  # round_up(hole_start, P), floor division


def _valid_SxL(kv_lens_S, hole_start_S, page_size, num_positions):
    pos_L = jnp.arange(num_positions, dtype=jnp.int32)
    lens, lo = kv_lens_S[:, None], hole_start_S[:, None]
    hi = _hole_end(lo, page_size)
    return (pos_L < lens) & ((pos_L < lo) | (pos_L >= hi))


# ----------------------------------------------------------------------------- reference


def ragged_paged_attention_reference(q_SxKxQxE, k_pages_KxNxPxE, v_pages_KxNxPxE, page_table_SxM,
                                     kv_lens_S, hole_start_S):
    """Every position of every table page, f32 throughout; the semantics, not the fast path."""
    num_seqs, kv_heads, _, head_dim = q_SxKxQxE.shape
    page_size, max_pages = k_pages_KxNxPxE.shape[2], page_table_SxM.shape[1]
    length = max_pages * page_size
    k_KxSxLxE = k_pages_KxNxPxE[:, page_table_SxM].reshape(kv_heads, num_seqs, length, head_dim)
    v_KxSxLxE = k_KxSxLxE if v_pages_KxNxPxE is None else v_pages_KxNxPxE[:, page_table_SxM
                                                                          ].reshape(k_KxSxLxE.shape)
    valid_SxL = _valid_SxL(kv_lens_S, hole_start_S, page_size, length)
    hi = lax.Precision.HIGHEST
    scores = jnp.einsum("skqe,ksle->skql", q_SxKxQxE.astype(jnp.float32),
                        k_KxSxLxE.astype(jnp.float32), precision=hi)
    mask = valid_SxL[:, None, None, :]
    scores = jnp.where(mask, scores, -jnp.inf)
    m = jnp.max(scores, axis=-1, keepdims=True)
    p = jnp.exp(scores - jnp.where(m == -jnp.inf, 0.0, m))  # all masked: exp(-inf) = 0, no NaN
    l = jnp.sum(p, axis=-1, keepdims=True)
    v = jnp.where(valid_SxL[None, :, :, None], v_KxSxLxE.astype(jnp.float32), 0.0)
    out = jnp.einsum("skql,ksle->skqe", p, v, precision=hi) / jnp.where(l > 0, l, 1.0)
    return out.astype(q_SxKxQxE.dtype)


# ----------------------------------------------------------------------------- xla


def _xla_attention(q_SxKxQxE, k_pages_KxNxPxE, v_pages_KxNxPxE, page_table_SxM, kv_lens_S,
                   hole_start_S):
    num_seqs, kv_heads, _, head_dim = q_SxKxQxE.shape
    page_size, max_pages = k_pages_KxNxPxE.shape[2], page_table_SxM.shape[1]
    length = max_pages * page_size
    valid_SxL = _valid_SxL(kv_lens_S, hole_start_S, page_size, length)

    # Index (head, page) pairs, one (P, E) slice each: the gather then writes [K, S, M, P, E]
    # in order, which is (K, S) batch-major for both einsums.  Gathering along N alone would
    # give [S, M, K, P, E] and a transpose of each gathered pool; only q and out (small) move.
    heads_Kx1x1 = jnp.arange(kv_heads, dtype=jnp.int32)[:, None, None]
    pages_1xSxM = jnp.clip(page_table_SxM, 0, k_pages_KxNxPxE.shape[1] - 1)[None]

    def gather(pages_KxNxPxE):
        return pages_KxNxPxE[heads_Kx1x1, pages_1xSxM].reshape(kv_heads, num_seqs, length,
                                                                head_dim)

    k_KxSxLxE = gather(k_pages_KxNxPxE)
    # Masking v fuses into its gather; a NaN in an unused page would otherwise meet p = 0.
    v_KxSxLxE = k_KxSxLxE if v_pages_KxNxPxE is None else gather(v_pages_KxNxPxE)
    v_KxSxLxE = jnp.where(valid_SxL[None, :, :, None], v_KxSxLxE, 0)
    q_KxSxQxE = jnp.swapaxes(q_SxKxQxE, 0, 1)
    precision = _precision(q_SxKxQxE.dtype)
    scores = jnp.einsum("ksqe,ksle->ksql", q_KxSxQxE, k_KxSxLxE, precision=precision,
                        preferred_element_type=jnp.float32)
    scores = jnp.where(valid_SxL[None, :, None, :], scores, -jnp.inf)
    m = jnp.max(scores, axis=-1, keepdims=True)
    p = jnp.exp(scores - jnp.where(m == -jnp.inf, 0.0, m))
    l = jnp.sum(p, axis=-1, keepdims=True)
    out = jnp.einsum("ksql,ksle->ksqe", p.astype(v_KxSxLxE.dtype), v_KxSxLxE,
                     precision=precision, preferred_element_type=jnp.float32)
    out = out / jnp.where(l > 0, l, 1.0)  # normalize the (Q, E) output, not the (Q, L) weights
    return jnp.swapaxes(out, 0, 1).astype(q_SxKxQxE.dtype)


# ----------------------------------------------------------------------------- pallas_tpu


def _kernel(table_ref, lens_ref, hole_lo_ref, hole_hi_ref,  # scalar prefetch, SMEM
            q_ref, *refs, page_size, pages_per_block, max_pages, shared):
    # q block (K, Q, E); the pools stay in HBM; then the output block and the scratch. Shared
    # (keys are values): one pool, one buffer.
    if shared:
        k_hbm, o_ref, k_buf, sems, m_sc, l_sc, acc_sc = refs
        v_hbm, v_buf = k_hbm, k_buf
    else:
        k_hbm, v_hbm, o_ref, k_buf, v_buf, sems, m_sc, l_sc, acc_sc = refs
    s = pl.program_id(0)
    kv_len, hole_lo, hole_hi = lens_ref[s], hole_lo_ref[s], hole_hi_ref[s]
    block_len = pages_per_block * page_size
    n_pages = lax.div(kv_len + page_size - 1, page_size)  # kv_len >= 0: clipped by the wrapper
    n_blocks = lax.div(n_pages + pages_per_block - 1, pages_per_block)

    def page_copies(block, slot, j):
        page = table_ref[s * max_pages + block * pages_per_block + j]
        rows = pl.ds(j * page_size, page_size)
        k_copy = pltpu.make_async_copy(k_hbm.at[:, page], k_buf.at[slot, :, rows],
                                       sems.at[0, slot])
        if shared:
            return (k_copy,)
        return k_copy, pltpu.make_async_copy(v_hbm.at[:, page], v_buf.at[slot, :, rows],
                                             sems.at[1, slot])

    def each_used_page(block, slot, action):
        # Unrolled over the block's pages; a page past the sequence is neither copied nor waited.
        for j in range(pages_per_block):
            @pl.when(block * pages_per_block + j < n_pages)
            def _(j=j):
                for copy in page_copies(block, slot, j):
                    action(copy)

    start = lambda block, slot: each_used_page(block, slot, lambda c: c.start())  # noqa: E731
    wait = lambda block, slot: each_used_page(block, slot, lambda c: c.wait())  # noqa: E731

    @pl.when(n_blocks > 0)
    def _prefetch_first():
        start(0, 0)

    m_sc[...] = jnp.full(m_sc.shape, -jnp.inf, jnp.float32)
    l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
    acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

    def valid(pos):
        return (pos < kv_len) & ((pos < hole_lo) | (pos >= hole_hi))

    def body(block, carry):
        slot = lax.rem(block, 2)

        @pl.when(block + 1 < n_blocks)
        def _prefetch_next():
            start(block + 1, 1 - slot)

        wait(block, slot)
        first = block * block_len
        q = q_ref[...]
        precision = _precision(q.dtype)
        scores = jnp.einsum("kqe,kte->kqt", q, k_buf[slot], precision=precision,
                            preferred_element_type=jnp.float32)
        pos_1x1xT = first + lax.broadcasted_iota(jnp.int32, (1, 1, block_len), 2)
        scores = jnp.where(valid(pos_1x1xT), scores, -jnp.inf)
        m_prev = m_sc[...]
        m_next = jnp.maximum(m_prev, jnp.max(scores, axis=-1, keepdims=True))
        # While every position so far is masked, m is -inf; shift by 0 so exp gives 0, not NaN.
        m_shift = jnp.where(m_next == -jnp.inf, 0.0, m_next)
        p = jnp.exp(scores - m_shift)
        alpha = jnp.exp(m_prev - m_shift)
        l_sc[...] = alpha * l_sc[...] + jnp.sum(p, axis=-1, keepdims=True)
        m_sc[...] = m_next

        def accumulate(v):
            acc_sc[...] = alpha * acc_sc[...] + jnp.einsum(
                "kqt,kte->kqe", p.astype(v.dtype), v, precision=precision,
                preferred_element_type=jnp.float32)

        # Selecting over the whole (K, T, E) v block costs about as much VPU time as its DMA
        # takes, so only blocks holding an invalid position (the last one, the hole's) pay it.
        last = first + block_len
        clean = (last <= kv_len) & ((hole_hi <= hole_lo) | (hole_hi <= first) | (hole_lo >= last))
        pl.when(clean)(lambda: accumulate(v_buf[slot]))

        @pl.when(jnp.logical_not(clean))
        def _masked():
            v = v_buf[slot]
            pos_1xTx1 = first + lax.broadcasted_iota(jnp.int32, (1, block_len, 1), 1)
            accumulate(jnp.where(valid(pos_1xTx1), v, jnp.zeros_like(v)))

        return carry

    lax.fori_loop(0, n_blocks, body, 0)
    l = l_sc[...]
    o_ref[...] = (acc_sc[...] / jnp.where(l > 0, l, 1.0)).astype(o_ref.dtype)


def _tpu_attention(q_SxKxQxE, k_pages_KxNxPxE, v_pages_KxNxPxE, page_table_SxM, kv_lens_S,
                   hole_start_S, *, pages_per_block, interpret):
    num_seqs, kv_heads, num_queries, head_dim = q_SxKxQxE.shape
    page_size, max_pages = k_pages_KxNxPxE.shape[2], page_table_SxM.shape[1]
    itemsize = q_SxKxQxE.dtype.itemsize
    block_len = page_size * pages_per_block
    # Clip so the kernel's page count never runs past the table (a length over M*P is a bug
    # upstream, but must not become an out-of-bounds SMEM read or DMA).
    kv_lens_S = jnp.clip(kv_lens_S.astype(jnp.int32), 0, max_pages * page_size)
    hole_lo_S = hole_start_S.astype(jnp.int32)
    hole_hi_S = _hole_end(hole_lo_S, page_size)
    # 1-D: SMEM pads a 2-D array's minor dim to a multiple of 128 words (M = 200 costs 256).
    table = page_table_SxM.astype(jnp.int32).reshape(-1)
    seq_block = pl.BlockSpec((None, kv_heads, num_queries, head_dim), lambda s, *_: (s, 0, 0, 0))
    shared = v_pages_KxNxPxE is None
    pools = (k_pages_KxNxPxE,) if shared else (k_pages_KxNxPxE, v_pages_KxNxPxE)
    need = bs.paged_attention_vmem_bytes(kv_heads, num_queries, head_dim, page_size,
                                         pages_per_block, itemsize, pools=len(pools))
    kernel = functools.partial(_kernel, page_size=page_size, pages_per_block=pages_per_block,
                               max_pages=max_pages, shared=shared)
    buffer = pltpu.VMEM((2, kv_heads, block_len, head_dim), k_pages_KxNxPxE.dtype)
    return pl.pallas_call(
        kernel,
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=4,
            grid=(num_seqs,),
            in_specs=[seq_block] + [pl.BlockSpec(memory_space=pl.ANY)] * len(pools),
            out_specs=seq_block,
            scratch_shapes=[
                *[buffer] * len(pools),
                pltpu.SemaphoreType.DMA((len(pools), 2)),  # (pool, slot)
                pltpu.VMEM((kv_heads, num_queries, 1), jnp.float32),
                pltpu.VMEM((kv_heads, num_queries, 1), jnp.float32),
                pltpu.VMEM((kv_heads, num_queries, head_dim), jnp.float32),
            ]),
        out_shape=jax.ShapeDtypeStruct(q_SxKxQxE.shape, q_SxKxQxE.dtype),
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel",),
            vmem_limit_bytes=min(max(int(need * 1.5), 32 * 2**20),
                                 int(vmem_capacity_bytes() * 0.9))),
        # Upper bound (every table page read); the real traffic is the sequences' own pages.
        cost_estimate=pl.CostEstimate(
            flops=4 * num_seqs * kv_heads * num_queries * max_pages * page_size * head_dim,
            transcendentals=num_seqs * kv_heads * num_queries * max_pages * page_size,
            bytes_accessed=len(pools) * num_seqs * max_pages * page_size * kv_heads * head_dim
            * itemsize),
        interpret=interpret,
        name="ragged_paged_attention",
    )(table, kv_lens_S, hole_lo_S, hole_hi_S, q_SxKxQxE, *pools)


# ----------------------------------------------------------------------------- public API


def resolve_impl(impl: str) -> str:
    """The implementation ``impl`` names on this backend (``"auto"`` resolved)."""
    if impl not in IMPLS:
        raise ValueError(f"ragged_paged_attention: impl={impl!r} is not one of {IMPLS}.")
    if impl != "auto":
        return impl
    return "pallas_tpu" if jax.default_backend() == "tpu" else "xla"


def _validate(q, k_pages, v_pages, page_table, kv_lens, hole_start):
    name = "ragged_paged_attention"
    if q.ndim != 4 or k_pages.ndim != 4:
        raise ValueError(f"{name} wants q [S, K, Q, E] and k/v pages [K, N, P, E]; got "
                         f"{q.shape} and {k_pages.shape}.")
    num_seqs, kv_heads, _, head_dim = q.shape
    v_pages = k_pages if v_pages is None else v_pages
    if v_pages.shape != k_pages.shape:
        raise ValueError(f"{name}: k pages {k_pages.shape} and v pages {v_pages.shape} differ.")
    if k_pages.shape[0] != kv_heads or k_pages.shape[3] != head_dim:
        raise ValueError(f"{name}: q {q.shape} is [S, K, Q, E] but pages {k_pages.shape} are not "
                         f"[K={kv_heads}, N, P, E={head_dim}].")
    if k_pages.shape[1] < 1 or k_pages.shape[2] < 1:
        raise ValueError(f"{name}: the page pool {k_pages.shape} has no pages or empty pages.")
    if page_table.ndim != 2 or page_table.shape[0] != num_seqs or page_table.shape[1] < 1:
        raise ValueError(f"{name}: page_table {page_table.shape} must be [S={num_seqs}, M>=1].")
    for arg, value in (("kv_lens", kv_lens), ("hole_start", hole_start)):
        if value.shape != (num_seqs,):
            raise ValueError(f"{name}: {arg} {value.shape} must be [S={num_seqs}].")
    for arg, value in (("page_table", page_table), ("kv_lens", kv_lens),
                       ("hole_start", hole_start)):
        if not jnp.issubdtype(value.dtype, jnp.integer):
            raise ValueError(f"{name}: {arg} must be integers, got {value.dtype}.")
    dtypes = {jnp.dtype(x.dtype) for x in (q, k_pages, v_pages)}
    if len(dtypes) != 1 or not dtypes <= set(_DTYPES):
        raise ValueError(f"{name}: q, k and v must share one dtype, float32 or bfloat16; got "
                         f"{q.dtype}, {k_pages.dtype}, {v_pages.dtype}.")


def smem_capacity_bytes() -> int:
    """SMEM per TensorCore of the TPU being traced for, or 1 MiB (v4 and later) when unknown."""
    try:
        return pltpu.get_tpu_info().smem_capacity_bytes
    except Exception:  # noqa: BLE001  no TPU in context (interpret mode, CPU-hosted AOT)
        return 2**20


def ragged_paged_attention(q_SxKxQxE, k_pages_KxNxPxE, v_pages_KxNxPxE, page_table_SxM, kv_lens_S,
                           hole_start_S, *, impl="auto", interpret=False, pages_per_block=None):
    """Decode attention of one query token per sequence over a paged KV cache.

    Args:
      q_SxKxQxE: queries, S sequences x K kv heads x Q query heads per kv head (GQA) x E, already
        scaled by 1/sqrt(E) (none is applied here).  float32 or bfloat16.
      k_pages_KxNxPxE, v_pages_KxNxPxE: the page pools, N pages of P tokens; same dtype as q.
        ``v_pages_KxNxPxE=None``: the key pages are the values too (read once).
      page_table_SxM: int page ids of each sequence's positions, P per entry, in order.  The
        entries a sequence uses (the first ``ceil(kv_len / P)``) must be in [0, N); later ones are
        ignored (pallas_tpu never reads them, xla clips and masks them).
      kv_lens_S: valid length of each sequence; 0 (an idle slot) gives output 0.
      hole_start_S: start of the hole, positions ``[hole_start, round_up(hole_start, P))``
        excluded; kv_len or any multiple of P means no hole.
      impl: "auto" (pallas_tpu on TPU, xla elsewhere), "xla", "pallas_tpu" or "reference".
      interpret: pallas_tpu only: True, or a ``pltpu.InterpretParams`` for TPU interpret mode.
      pages_per_block: pallas_tpu only: pages DMAed per inner step (None: about 512 tokens).

    Returns:
      ``out_SxKxQxE`` in the dtype of q; scores, softmax and accumulation in float32 (xla and
      pallas_tpu round the softmax weights to bf16 for the p @ v matmul when the pools are bf16,
      as flash attention does).
    """
    _validate(q_SxKxQxE, k_pages_KxNxPxE, v_pages_KxNxPxE, page_table_SxM, kv_lens_S,
              hole_start_S)
    impl = resolve_impl(impl)
    num_seqs, kv_heads, _, head_dim = q_SxKxQxE.shape
    page_size, max_pages = k_pages_KxNxPxE.shape[2], page_table_SxM.shape[1]
    if pages_per_block is not None and (not isinstance(pages_per_block, int)
                                        or pages_per_block < 1):
        raise ValueError(f"ragged_paged_attention: pages_per_block must be a positive int, got "
                         f"{pages_per_block!r}.")
    if impl == "pallas_tpu":
        if pages_per_block is None:
            pages_per_block = bs.default_pages_per_block(
                page_size, max_pages, kv_heads, head_dim, q_SxKxQxE.dtype.itemsize,
                pools=1 if v_pages_KxNxPxE is None else 2)
        bs.check_paged_tpu(page_size, num_seqs, max_pages, pages_per_block,
                           smem_capacity_bytes())
    else:
        pages_per_block, interpret = None, False
    if num_seqs == 0:
        return jnp.zeros(q_SxKxQxE.shape, q_SxKxQxE.dtype)
    return _attention(q_SxKxQxE, k_pages_KxNxPxE, v_pages_KxNxPxE, page_table_SxM, kv_lens_S,
                      hole_start_S, impl=impl, pages_per_block=pages_per_block,
                      interpret=interpret)


@functools.partial(jax.jit, static_argnames=("impl", "pages_per_block", "interpret"))
def _attention(q_SxKxQxE, k_pages_KxNxPxE, v_pages_KxNxPxE, page_table_SxM, kv_lens_S,
               hole_start_S, *, impl, pages_per_block, interpret):
    args = (q_SxKxQxE, k_pages_KxNxPxE, v_pages_KxNxPxE, page_table_SxM.astype(jnp.int32),
            kv_lens_S.astype(jnp.int32), hole_start_S.astype(jnp.int32))
    if impl == "reference":
        return ragged_paged_attention_reference(*args)
    if impl == "xla":
        return _xla_attention(*args)
    return _tpu_attention(*args, pages_per_block=pages_per_block, interpret=interpret)
