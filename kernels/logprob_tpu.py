"""Pallas TPU (Mosaic) kernels for token log-probs: forward, dh and dW, never holding N x V.

Kernels and grids (i: row block of ``block_n`` tokens, j: vocab block of ``block_v`` columns):
  forward  grid (i, j), j innermost and sequential: the online log-sum-exp of
           ``kernels.logprob_reference`` with running max / sum / target logit / E[z] in VMEM
           scratch; writes logp, lse and E_p[z] for the row block at the last j.
  dh       grid (i, j), j sequential: recompute the z tile, dz, and accumulate dz W^T in an
           f32 (block_n, D) VMEM accumulator; dh = sum over V.
  dW       grid (j, i), i sequential: recompute the z tile, dz, and accumulate h^T dz in an f32
           (D, block_v) VMEM accumulator; dW = sum over N.
Two backward kernels recompute the logits twice (8 N D V FLOPs forward + backward in all) because
the two reductions run over different axes; fusing them would need a read-modify-write of a
(D, block_v) f32 dW block in HBM per tile, which costs more bandwidth than the extra matmul.

Ragged shapes use Pallas boundary blocks, whose out-of-range part holds unspecified data (NaN in
TPU interpret mode).  Columns past V get logits -inf and weight 0 (a NaN weight times a zero
cotangent is still NaN in the dh matmul); rows past N get hidden 0 and cotangent 0 in the dW
kernel.  Out-of-range rows of the other outputs are dropped by Pallas.

The materializing reference is ``kernels.logprob_reference.token_logprobs_reference``.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from kernels import block_sizes as bs
from kernels.logprob_reference import (finish_online_softmax, logits_cotangent, matmul_precision,
                                       online_softmax_step)

_NT = (((1,), (1,)), ((), ()))  # a @ b.T
_TN = (((0,), (0,)), ((), ()))  # a.T @ b


def _column_ids(j, block_v, shape):
    return j * block_v + lax.broadcasted_iota(jnp.int32, shape, 1)


def _scaled_logits(h_ref, w_ref, j, *, inv_temp, vocab, block_v):
    """The (block_n, block_v) f32 logits tile, -inf past V, with its column ids and validity."""
    h, w = h_ref[...], w_ref[...]
    z = lax.dot_general(h, w, (((1,), (0,)), ((), ())), precision=matmul_precision(h.dtype),
                        preferred_element_type=jnp.float32) * inv_temp
    cols = _column_ids(j, block_v, z.shape)
    valid = None
    if vocab % block_v:
        valid = cols < vocab
        z = jnp.where(valid, z, -jnp.inf)
    return z, cols, valid


def vmem_capacity_bytes() -> int:
    """VMEM per TensorCore of the TPU being traced for, or 64 MiB when that is unknown."""
    try:
        return pltpu.get_tpu_info().vmem_capacity_bytes
    except Exception:  # noqa: BLE001  no TPU in context (interpret mode, CPU-hosted AOT)
        return bs.TPU_DEFAULT_VMEM_BYTES


def _compiler_params(semantics, blocks, model_dim, itemsize):
    # Mosaic's default scoped VMEM limit (16-32 MiB) is below what tall tiles need; ask for the
    # estimate plus headroom, never more than the chip has.
    need = bs.tpu_logprob_vmem_bytes(blocks.block_n, blocks.block_v, model_dim, itemsize)
    capacity = vmem_capacity_bytes()
    limit = min(max(int(need * 1.25), 32 * 2**20), int(capacity * 0.9))
    return pltpu.CompilerParams(dimension_semantics=semantics, vmem_limit_bytes=limit)


# ----------------------------------------------------------------------------- forward


def _forward_kernel(h_ref, w_ref, t_ref, *refs, inv_temp, vocab, block_v, with_entropy):
    if with_entropy:
        logp_ref, lse_ref, ez_ref, m_sc, l_sc, zt_sc, s_sc = refs
    else:
        (logp_ref, lse_ref, m_sc, l_sc, zt_sc), ez_ref, s_sc = refs, None, None
    j = pl.program_id(1)

    @pl.when(j == 0)
    def _init():
        m_sc[...] = jnp.full(m_sc.shape, -jnp.inf, jnp.float32)
        for ref in (l_sc, zt_sc, s_sc):
            if ref is not None:
                ref[...] = jnp.zeros(ref.shape, jnp.float32)

    z, cols, valid = _scaled_logits(h_ref, w_ref, j, inv_temp=inv_temp, vocab=vocab,
                                    block_v=block_v)
    m, l, zt, s = online_softmax_step(z, cols == t_ref[...], m_sc[...], l_sc[...], zt_sc[...],
                                      None if s_sc is None else s_sc[...], valid)
    m_sc[...], l_sc[...], zt_sc[...] = m, l, zt
    if s_sc is not None:
        s_sc[...] = s

    @pl.when(j == pl.num_programs(1) - 1)
    def _finish():
        logp, lse, ez = finish_online_softmax(m, l, zt, s)
        logp_ref[...], lse_ref[...] = logp, lse
        if ez_ref is not None:
            ez_ref[...] = ez


def _tile_sizes(blocks, n_tokens, vocab):
    # A block as large as the array is always legal on TPU; clamp so tiny inputs need no padding.
    return min(blocks.block_n, n_tokens), min(blocks.block_v, vocab)


def tpu_forward(hidden_NxD, lm_head_DxV, targets_N, *, inv_temp, with_entropy, blocks,
                interpret=False):
    """Returns ``(logp_N, lse_N, ez_N or None)`` in f32; see the module docstring."""
    n_tokens, model_dim = hidden_NxD.shape
    vocab = lm_head_DxV.shape[1]
    block_n, block_v = _tile_sizes(blocks, n_tokens, vocab)
    grid = (pl.cdiv(n_tokens, block_n), pl.cdiv(vocab, block_v))
    row_spec = pl.BlockSpec((block_n, 1), lambda i, j: (i, 0))
    n_out = 3 if with_entropy else 2
    kernel = functools.partial(_forward_kernel, inv_temp=inv_temp, vocab=vocab, block_v=block_v,
                               with_entropy=with_entropy)
    outs = pl.pallas_call(
        kernel,
        grid=grid,
        in_specs=[
            pl.BlockSpec((block_n, model_dim), lambda i, j: (i, 0)),
            pl.BlockSpec((model_dim, block_v), lambda i, j: (0, j)),
            row_spec,
        ],
        out_specs=[row_spec] * n_out,
        out_shape=[jax.ShapeDtypeStruct((n_tokens, 1), jnp.float32)] * n_out,
        scratch_shapes=[pltpu.VMEM((block_n, 1), jnp.float32)] * (n_out + 1),
        compiler_params=_compiler_params(("parallel", "arbitrary"), blocks, model_dim,
                                         hidden_NxD.dtype.itemsize),
        cost_estimate=pl.CostEstimate(
            flops=2 * n_tokens * model_dim * vocab, transcendentals=n_tokens * vocab,
            bytes_accessed=(grid[0] * lm_head_DxV.size + hidden_NxD.size)
            * hidden_NxD.dtype.itemsize),
        interpret=interpret,
        name="token_logprobs_fwd",
    )(hidden_NxD, lm_head_DxV, targets_N.astype(jnp.int32)[:, None])
    outs = [o[:, 0] for o in outs]
    return outs[0], outs[1], (outs[2] if with_entropy else None)


# ----------------------------------------------------------------------------- backward


def _cotangent_tile(h_ref, w_ref, t_ref, lse_ref, g_ref, ez_ref, e_ref, j, *, inv_temp, vocab,
                    block_v):
    """(dz / T) for one tile, zero on columns past V; also returns the column validity."""
    z, cols, valid = _scaled_logits(h_ref, w_ref, j, inv_temp=inv_temp, vocab=vocab,
                                    block_v=block_v)
    dz = logits_cotangent(z, cols == t_ref[...], lse_ref[...], g_ref[...],
                          None if ez_ref is None else ez_ref[...],
                          None if e_ref is None else e_ref[...])
    if valid is not None:
        dz = jnp.where(valid, dz, 0.0)
    return dz * inv_temp, valid


def _split_backward_refs(refs, with_entropy):
    h_ref, w_ref, t_ref, lse_ref, g_ref, *rest = refs
    if with_entropy:
        ez_ref, e_ref, *rest = rest
    else:
        ez_ref = e_ref = None
    return (h_ref, w_ref, t_ref, lse_ref, g_ref, ez_ref, e_ref), rest


def _dh_kernel(*refs, inv_temp, vocab, block_v, with_entropy):
    ins, (dh_ref, acc_sc) = _split_backward_refs(refs, with_entropy)
    w_ref = ins[1]
    j = pl.program_id(1)

    @pl.when(j == 0)
    def _init():
        acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

    dz, valid = _cotangent_tile(*ins, j, inv_temp=inv_temp, vocab=vocab, block_v=block_v)
    w = w_ref[...]
    if valid is not None:
        w = jnp.where(_column_ids(j, block_v, w.shape) < vocab, w, jnp.zeros_like(w))
    acc_sc[...] += lax.dot_general(dz.astype(w.dtype), w, _NT, precision=matmul_precision(w.dtype),
                                   preferred_element_type=jnp.float32)

    @pl.when(j == pl.num_programs(1) - 1)
    def _finish():
        dh_ref[...] = acc_sc[...].astype(dh_ref.dtype)


def _dw_kernel(*refs, inv_temp, vocab, block_v, n_tokens, block_n, with_entropy):
    ins, (dw_ref, acc_sc) = _split_backward_refs(refs, with_entropy)
    h_ref = ins[0]
    j, i = pl.program_id(0), pl.program_id(1)

    @pl.when(i == 0)
    def _init():
        acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

    dz, _ = _cotangent_tile(*ins, j, inv_temp=inv_temp, vocab=vocab, block_v=block_v)
    h = h_ref[...]
    if n_tokens % block_n:
        rows_dz = i * block_n + lax.broadcasted_iota(jnp.int32, dz.shape, 0)
        dz = jnp.where(rows_dz < n_tokens, dz, 0.0)
        rows_h = i * block_n + lax.broadcasted_iota(jnp.int32, h.shape, 0)
        h = jnp.where(rows_h < n_tokens, h, jnp.zeros_like(h))
    acc_sc[...] += lax.dot_general(h, dz.astype(h.dtype), _TN, precision=matmul_precision(h.dtype),
                                   preferred_element_type=jnp.float32)

    @pl.when(i == pl.num_programs(1) - 1)
    def _finish():
        dw_ref[...] = acc_sc[...].astype(dw_ref.dtype)


def _backward_call(which, hidden_NxD, lm_head_DxV, targets_N, lse_N, g_N, ez_N, e_N, *,
                   inv_temp, blocks, interpret):
    """One backward pallas_call: ``which`` is "dh" (grid (i, j)) or "dw" (grid (j, i))."""
    n_tokens, model_dim = hidden_NxD.shape
    vocab = lm_head_DxV.shape[1]
    block_n, block_v = _tile_sizes(blocks, n_tokens, vocab)
    n_row_blocks, n_col_blocks = pl.cdiv(n_tokens, block_n), pl.cdiv(vocab, block_v)
    with_entropy = e_N is not None
    column = lambda x: x.astype(jnp.float32)[:, None]  # noqa: E731
    row_inputs = [targets_N.astype(jnp.int32)[:, None], column(lse_N), column(g_N)]
    if with_entropy:
        row_inputs += [column(ez_N), column(e_N)]
    itemsize = hidden_NxD.dtype.itemsize
    statics = dict(inv_temp=inv_temp, vocab=vocab, block_v=block_v, with_entropy=with_entropy)
    if which == "dh":
        grid, ij = (n_row_blocks, n_col_blocks), lambda i, j: (i, j)
        kernel = functools.partial(_dh_kernel, **statics)
        out_spec = pl.BlockSpec((block_n, model_dim), lambda i, j: (i, 0))
        out_shape = jax.ShapeDtypeStruct(hidden_NxD.shape, hidden_NxD.dtype)
        scratch = pltpu.VMEM((block_n, model_dim), jnp.float32)
        # W is streamed once per row block; hidden is read and dh written once.
        traffic = n_row_blocks * lm_head_DxV.size + 2 * hidden_NxD.size
    else:
        grid, ij = (n_col_blocks, n_row_blocks), lambda j, i: (i, j)
        kernel = functools.partial(_dw_kernel, n_tokens=n_tokens, block_n=block_n, **statics)
        out_spec = pl.BlockSpec((model_dim, block_v), lambda j, i: (0, j))
        out_shape = jax.ShapeDtypeStruct(lm_head_DxV.shape, lm_head_DxV.dtype)
        scratch = pltpu.VMEM((model_dim, block_v), jnp.float32)
        traffic = n_col_blocks * hidden_NxD.size + 2 * lm_head_DxV.size
    row_spec = pl.BlockSpec((block_n, 1), lambda *g: (ij(*g)[0], 0))
    in_specs = [pl.BlockSpec((block_n, model_dim), lambda *g: (ij(*g)[0], 0)),
                pl.BlockSpec((model_dim, block_v), lambda *g: (0, ij(*g)[1]))]
    in_specs += [row_spec] * len(row_inputs)
    return pl.pallas_call(
        kernel,
        grid=grid,
        in_specs=in_specs,
        out_specs=out_spec,
        out_shape=out_shape,
        scratch_shapes=[scratch],
        compiler_params=_compiler_params(("parallel", "arbitrary"), blocks, model_dim, itemsize),
        cost_estimate=pl.CostEstimate(flops=4 * n_tokens * model_dim * vocab,
                                      transcendentals=n_tokens * vocab,
                                      bytes_accessed=traffic * itemsize),
        interpret=interpret,
        name=f"token_logprobs_bwd_{which}",
    )(hidden_NxD, lm_head_DxV, *row_inputs)


def tpu_backward(hidden_NxD, lm_head_DxV, targets_N, lse_N, g_N, ez_N=None, e_N=None, *,
                 inv_temp, blocks, interpret=False):
    """Returns ``(d_hidden_NxD, d_lm_head_DxV)`` in the input dtypes; see the module docstring.

    ``g_N`` is the cotangent of logp; ``e_N`` (with ``ez_N`` = E_p[z]) that of the entropy.
    """
    args = (hidden_NxD, lm_head_DxV, targets_N, lse_N, g_N, ez_N, e_N)
    kw = dict(inv_temp=inv_temp, blocks=blocks, interpret=interpret)
    return _backward_call("dh", *args, **kw), _backward_call("dw", *args, **kw)
