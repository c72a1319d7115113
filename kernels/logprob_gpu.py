"""Pallas GPU (Triton) forward kernel for token log-probs, never holding N x V.

One program per ``block_n`` rows of tokens; inside it a loop over vocab blocks runs the online
log-sum-exp of ``kernels.logprob_reference``, and inside that a loop over ``block_d`` chunks of the
model width builds each (block_n, block_v) logits tile.  Triton tiles must be powers of two and
D (1536, 3584, ...) often is not, hence the D loop with masked loads instead of one (block_n, D)
tile.  Every load is masked: rows past N, columns past V and widths past D read 0, and columns
past V then get logits -inf.

Only the forward runs in Triton -- it is the most frequent call (old-policy and reference
log-probs need no gradient).  Its backward is ``kernels.logprob_xla.xla_backward``: the two
backward reductions (dh over V, dW over N) are plain matmuls of a streamed cotangent tile, which
XLA hands to cuBLAS, while a Triton dh kernel would need a (block_n, D) register accumulator that
does not fit for D in the thousands.

The materializing reference is ``kernels.logprob_reference.token_logprobs_reference``.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from kernels.logprob_reference import (finish_online_softmax, matmul_precision,
                                       online_softmax_step)


def _forward_kernel(h_ref, w_ref, t_ref, *out_refs, inv_temp, n_tokens, model_dim, vocab,
                    block_n, block_v, block_d, with_entropy):
    r0 = pl.program_id(0) * block_n
    rows = r0 + jnp.arange(block_n)
    row_ok = rows < n_tokens
    t_rows = plgpu.load(t_ref.at[pl.ds(r0, block_n)], mask=row_ok, other=0)[:, None]
    precision = matmul_precision(h_ref.dtype)

    def vocab_block(j, stats):
        c0 = j * block_v
        cols = c0 + jnp.arange(block_v)
        col_ok = cols < vocab

        def width_chunk(k, acc):
            d0 = k * block_d
            d_ok = (d0 + jnp.arange(block_d)) < model_dim
            h = plgpu.load(h_ref.at[pl.ds(r0, block_n), pl.ds(d0, block_d)],
                           mask=row_ok[:, None] & d_ok[None, :], other=0.0)
            w = plgpu.load(w_ref.at[pl.ds(d0, block_d), pl.ds(c0, block_v)],
                           mask=d_ok[:, None] & col_ok[None, :], other=0.0)
            return acc + jnp.dot(h, w, precision=precision, preferred_element_type=jnp.float32)

        z = lax.fori_loop(0, pl.cdiv(model_dim, block_d), width_chunk,
                          jnp.zeros((block_n, block_v), jnp.float32)) * inv_temp
        valid = jnp.broadcast_to(col_ok[None, :], z.shape)
        z = jnp.where(valid, z, -jnp.inf)
        return online_softmax_step(z, cols[None, :] == t_rows, *stats, valid_nxv=valid)

    col = jnp.zeros((block_n, 1), jnp.float32)
    stats = (jnp.full_like(col, -jnp.inf), col, col, col if with_entropy else None)
    logp, lse, ez = finish_online_softmax(
        *lax.fori_loop(0, pl.cdiv(vocab, block_v), vocab_block, stats))
    for ref, value in zip(out_refs, (logp, lse, ez)):
        plgpu.store(ref.at[pl.ds(r0, block_n)], value[:, 0], mask=row_ok)


def gpu_forward(hidden_NxD, lm_head_DxV, targets_N, *, inv_temp, with_entropy, blocks,
                interpret=False, num_warps=4, num_stages=2):
    """Returns ``(logp_N, lse_N, ez_N or None)`` in f32; see the module docstring."""
    n_tokens, model_dim = hidden_NxD.shape
    vocab = lm_head_DxV.shape[1]
    n_out = 3 if with_entropy else 2
    kernel = functools.partial(
        _forward_kernel, inv_temp=inv_temp, n_tokens=n_tokens, model_dim=model_dim, vocab=vocab,
        block_n=blocks.block_n, block_v=blocks.block_v, block_d=blocks.block_d,
        with_entropy=with_entropy)
    whole = lambda shape: pl.BlockSpec(shape, lambda i: (0,) * len(shape))  # noqa: E731
    outs = pl.pallas_call(
        kernel,
        grid=(pl.cdiv(n_tokens, blocks.block_n),),
        # Whole-array refs: the kernel slices and masks them itself (see the module docstring).
        in_specs=[whole(hidden_NxD.shape), whole(lm_head_DxV.shape), whole(targets_N.shape)],
        out_specs=[whole((n_tokens,))] * n_out,
        out_shape=[jax.ShapeDtypeStruct((n_tokens,), jnp.float32)] * n_out,
        compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages),
        interpret=interpret,
        name="token_logprobs_fwd_triton",
    )(hidden_NxD, lm_head_DxV, targets_N.astype(jnp.int32))
    return outs[0], outs[1], (outs[2] if with_entropy else None)
