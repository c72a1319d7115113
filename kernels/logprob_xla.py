"""Pure-JAX streaming token log-probs: the default on CPU and GPU, never holding N x V.

The same math as the Pallas kernels (see ``kernels.logprob_reference``), written as XLA loops:
  forward   for each row chunk (block_n tokens): for each vocab block (block_v columns):
            online log-sum-exp update.  Outputs logp, lse, E_p[z].
  backward  for each vocab block: for each row chunk: recompute the z tile, dz, then
            dh[rows] += dz W_blk^T and dW_blk += h[rows]^T dz; write dW_blk once.
Peak extra memory is a few ``block_n x block_v`` f32 tiles plus an f32 (N, D) dh accumulator.

Ragged edges without padding copies of W or hidden: the last block's start is clamped so the
slice stays in bounds (``start = min(k * block, size - block)``), and the entries it re-covers,
index < k * block, are masked out -- logits to -inf, cotangents to 0 -- so nothing counts twice.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from kernels.logprob_reference import (finish_online_softmax, logits_cotangent, matmul_precision,
                                       online_softmax_step)


def _clamped_block(k, block, size):
    """Start of block k, clamped in bounds, and the first index it newly covers."""
    first_new = k * block
    return jnp.minimum(first_new, size - block), first_new


def _logits_tile(h_rows, lm_head_DxV, c0, first_col, block_v, inv_temp):
    """f32 logits for columns [c0, c0 + block_v), -inf on columns before ``first_col``."""
    w_blk = lax.dynamic_slice_in_dim(lm_head_DxV, c0, block_v, axis=1)
    z = jnp.dot(h_rows, w_blk, precision=matmul_precision(h_rows.dtype),
                preferred_element_type=jnp.float32) * inv_temp
    cols = c0 + lax.broadcasted_iota(jnp.int32, z.shape, 1)
    fresh = cols >= first_col
    return jnp.where(fresh, z, -jnp.inf), cols, fresh, w_blk


def xla_forward(hidden_NxD, lm_head_DxV, targets_N, *, inv_temp, with_entropy, blocks):
    """Returns ``(logp_N, lse_N, ez_N or None)`` in f32."""
    n_tokens = hidden_NxD.shape[0]
    vocab = lm_head_DxV.shape[1]
    block_n, block_v = min(blocks.block_n, n_tokens), min(blocks.block_v, vocab)
    n_row_chunks, n_col_blocks = -(-n_tokens // block_n), -(-vocab // block_v)
    targets_N = targets_N.astype(jnp.int32)

    def row_chunk(i, outs_3xN):
        r0, first_row = _clamped_block(i, block_n, n_tokens)
        h_rows = lax.dynamic_slice_in_dim(hidden_NxD, r0, block_n)
        t_rows = lax.dynamic_slice_in_dim(targets_N, r0, block_n)[:, None]

        def vocab_block(j, stats):
            c0, first_col = _clamped_block(j, block_v, vocab)
            z, cols, fresh, _ = _logits_tile(h_rows, lm_head_DxV, c0, first_col, block_v, inv_temp)
            return online_softmax_step(z, cols == t_rows, *stats, valid_nxv=fresh)

        col = jnp.zeros((block_n, 1), jnp.float32)
        stats = (jnp.full_like(col, -jnp.inf), col, col, col if with_entropy else None)
        logp, lse, ez = finish_online_softmax(*lax.fori_loop(0, n_col_blocks, vocab_block, stats))
        new_3xN = jnp.stack([logp[:, 0], lse[:, 0], (lse if ez is None else ez)[:, 0]])
        # Rows re-covered by a clamped last chunk already hold the same values; keep the old ones.
        old_3xN = lax.dynamic_slice_in_dim(outs_3xN, r0, block_n, axis=1)
        fresh_rows = (r0 + jnp.arange(block_n)) >= first_row
        return lax.dynamic_update_slice_in_dim(outs_3xN, jnp.where(fresh_rows, new_3xN, old_3xN),
                                               r0, axis=1)

    outs_3xN = lax.fori_loop(0, n_row_chunks, row_chunk, jnp.zeros((3, n_tokens), jnp.float32))
    return outs_3xN[0], outs_3xN[1], (outs_3xN[2] if with_entropy else None)


def xla_backward(hidden_NxD, lm_head_DxV, targets_N, lse_N, g_N, ez_N=None, e_N=None, *,
                 inv_temp, blocks):
    """Returns ``(d_hidden_NxD, d_lm_head_DxV)`` in the input dtypes.

    ``g_N`` is the cotangent of logp; ``e_N`` (with ``ez_N`` = E_p[z]) that of the entropy.
    """
    n_tokens, model_dim = hidden_NxD.shape
    vocab = lm_head_DxV.shape[1]
    block_n, block_v = min(blocks.block_n, n_tokens), min(blocks.block_v, vocab)
    n_row_chunks, n_col_blocks = -(-n_tokens // block_n), -(-vocab // block_v)
    with_entropy = e_N is not None
    # Per-row inputs side by side, so one dynamic slice fetches a row chunk's worth.
    rows_NxK = jnp.stack([targets_N.astype(jnp.float32), lse_N, g_N]
                         + ([ez_N, e_N] if with_entropy else []), axis=1).astype(jnp.float32)
    compute_dtype = hidden_NxD.dtype

    def vocab_block(j, carry):
        d_hidden_NxD, d_lm_head_DxV = carry
        c0, first_col = _clamped_block(j, block_v, vocab)

        def row_chunk(i, inner):
            d_hidden_NxD, d_w_blk = inner
            r0, first_row = _clamped_block(i, block_n, n_tokens)
            h_rows = lax.dynamic_slice_in_dim(hidden_NxD, r0, block_n)
            row = lax.dynamic_slice_in_dim(rows_NxK, r0, block_n)
            t_rows = row[:, 0:1].astype(jnp.int32)  # exact: vocab ids < 2**24
            z, cols, fresh, w_blk = _logits_tile(h_rows, lm_head_DxV, c0, first_col, block_v,
                                                 inv_temp)
            dz = logits_cotangent(z, cols == t_rows, row[:, 1:2], row[:, 2:3],
                                  row[:, 3:4] if with_entropy else None,
                                  row[:, 4:5] if with_entropy else None)
            fresh_rows = (r0 + lax.broadcasted_iota(jnp.int32, dz.shape, 0)) >= first_row
            dz = (jnp.where(fresh & fresh_rows, dz, 0.0) * inv_temp).astype(compute_dtype)
            precision = matmul_precision(compute_dtype)
            dh_rows = jnp.dot(dz, w_blk.T, precision=precision, preferred_element_type=jnp.float32)
            old = lax.dynamic_slice_in_dim(d_hidden_NxD, r0, block_n)
            d_hidden_NxD = lax.dynamic_update_slice_in_dim(d_hidden_NxD, old + dh_rows, r0, axis=0)
            d_w_blk = d_w_blk + jnp.dot(h_rows.T, dz, precision=precision,
                                        preferred_element_type=jnp.float32)
            return d_hidden_NxD, d_w_blk

        d_w_blk = jnp.zeros((model_dim, block_v), jnp.float32)
        d_hidden_NxD, d_w_blk = lax.fori_loop(0, n_row_chunks, row_chunk, (d_hidden_NxD, d_w_blk))
        # Columns re-covered by a clamped last block are already final; keep them.
        old = lax.dynamic_slice_in_dim(d_lm_head_DxV, c0, block_v, axis=1)
        fresh_cols = (c0 + jnp.arange(block_v)) >= first_col
        new = jnp.where(fresh_cols, d_w_blk.astype(d_lm_head_DxV.dtype), old)
        return d_hidden_NxD, lax.dynamic_update_slice_in_dim(d_lm_head_DxV, new, c0, axis=1)

    init = (jnp.zeros((n_tokens, model_dim), jnp.float32), jnp.zeros_like(lm_head_DxV))
    d_hidden_NxD, d_lm_head_DxV = lax.fori_loop(0, n_col_blocks, vocab_block, init)
    return d_hidden_NxD.astype(hidden_NxD.dtype), d_lm_head_DxV
