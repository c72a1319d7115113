"""``token_logprobs``: per-token log-probs (and entropy) of targets under an LM head, without N x V.

    logp_n = log softmax((h_n W) / T)[t_n],      H_n = entropy of softmax((h_n W) / T)

This module picks an implementation and wires the ``custom_vjp``; the math and the materializing
reference are in ``kernels.logprob_reference``, the kernels in ``logprob_tpu`` (Pallas TPU),
``logprob_gpu`` (Pallas Triton, forward only) and ``logprob_xla`` (pure-JAX streaming).
The backward saves O(N) residuals -- lse_n and E_p[z]_n -- and recomputes logits one tile at a
time, so no implementation except ``reference`` ever holds an N x V array, forward or backward.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from kernels import block_sizes as bs
from kernels import logprob_gpu, logprob_tpu, logprob_xla
from kernels.logprob_reference import token_logprobs_reference


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything static about one call; hashable, so it can be a nondiff argument of custom_vjp."""

    impl: str
    inv_temp: float
    with_entropy: bool
    blocks: bs.LogprobBlockSizes
    interpret: Any  # bool, or pltpu.InterpretParams for TPU interpret mode


def resolve_impl(impl: str) -> str:
    """The implementation ``impl`` names on this backend (``"auto"`` resolved)."""
    if impl not in bs.LOGPROB_IMPLS:
        raise ValueError(f"token_logprobs: impl={impl!r} is not one of {bs.LOGPROB_IMPLS}.")
    if impl != "auto":
        return impl
    # Mosaic on TPU; on CPU and GPU the XLA streaming loop (the Triton kernel is opt-in: it only
    # covers the forward and is not tuned per GPU).
    return "pallas_tpu" if jax.default_backend() == "tpu" else "xla_chunked"


def _forward(plan: _Plan, hidden_NxD, lm_head_DxV, targets_N):
    kw = dict(inv_temp=plan.inv_temp, with_entropy=plan.with_entropy, blocks=plan.blocks)
    if plan.impl == "pallas_tpu":
        return logprob_tpu.tpu_forward(hidden_NxD, lm_head_DxV, targets_N, **kw,
                                       interpret=plan.interpret)
    if plan.impl == "pallas_gpu":
        return logprob_gpu.gpu_forward(hidden_NxD, lm_head_DxV, targets_N, **kw,
                                       interpret=plan.interpret)
    return logprob_xla.xla_forward(hidden_NxD, lm_head_DxV, targets_N, **kw)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _streamed(hidden_NxD, lm_head_DxV, targets_N, plan: _Plan):
    logp_N, lse_N, ez_N = _forward(plan, hidden_NxD, lm_head_DxV, targets_N)
    return logp_N, (lse_N - ez_N if plan.with_entropy else None)


def _streamed_fwd(hidden_NxD, lm_head_DxV, targets_N, plan: _Plan):
    logp_N, lse_N, ez_N = _forward(plan, hidden_NxD, lm_head_DxV, targets_N)
    entropy_N = lse_N - ez_N if plan.with_entropy else None
    return (logp_N, entropy_N), (hidden_NxD, lm_head_DxV, targets_N, lse_N, ez_N)


def _streamed_bwd(plan: _Plan, residuals, cotangents):
    hidden_NxD, lm_head_DxV, targets_N, lse_N, ez_N = residuals
    g_N, e_N = cotangents
    if not plan.with_entropy:
        e_N = ez_N = None
    args = (hidden_NxD, lm_head_DxV, targets_N, lse_N, g_N.astype(jnp.float32), ez_N,
            None if e_N is None else e_N.astype(jnp.float32))
    if plan.impl == "pallas_tpu":
        d_hidden, d_lm_head = logprob_tpu.tpu_backward(*args, inv_temp=plan.inv_temp,
                                                       blocks=plan.blocks, interpret=plan.interpret)
    else:
        # pallas_gpu has no Triton backward (see logprob_gpu); its tiles are too small for XLA.
        blocks = plan.blocks if plan.impl == "xla_chunked" else \
            bs.LogprobBlockSizes.default("xla_chunked")
        d_hidden, d_lm_head = logprob_xla.xla_backward(*args, inv_temp=plan.inv_temp, blocks=blocks)
    return d_hidden, d_lm_head, None  # integer targets have no cotangent


_streamed.defvjp(_streamed_fwd, _streamed_bwd)


def token_logprobs(hidden_NxD, lm_head_DxV, targets_N, *, temperature=1.0, return_entropy=False,
                   impl="auto", block_sizes=None, interpret=False):
    """Log-probs of ``targets_N`` under ``softmax(hidden_NxD @ lm_head_DxV / temperature)``.

    Args:
      hidden_NxD: final hidden states of the N scored tokens (completion tokens only, flattened),
        f32 or bf16.
      lm_head_DxV: the output projection; for tied embeddings pass ``embedding_VxD.T``.  If its
        dtype differs from ``hidden_NxD`` both are promoted to the common dtype.
      targets_N: integer token ids in ``[0, V)``; out-of-range ids give unspecified log-probs.
      temperature: static Python float > 0; logits are divided by it (the sampling temperature,
        so the log-probs match the distribution the rollout sampled from).
      return_entropy: also return the entropy of ``softmax(logits / temperature)`` per token.
      impl: "auto" (pallas_tpu on TPU, xla_chunked on CPU and GPU), "pallas_tpu", "xla_chunked",
        "pallas_gpu" (Triton forward + xla_chunked backward), or "reference" (materializes N x V;
        tests and benchmarks only).
      block_sizes: a ``LogprobBlockSizes``; None picks per-impl defaults (on TPU sized to the
        chip's VMEM).  Validated per backend; a bad tile raises ``ValueError``.
      interpret: run the Pallas kernel in interpret mode (True), or, for pallas_tpu, pass a
        ``pltpu.InterpretParams`` for TPU interpret mode (simulated VMEM, race detection).

    Returns:
      ``(logp_N, entropy_N)`` in float32; ``entropy_N`` is None unless ``return_entropy``.
      Differentiable (``custom_vjp``) with respect to ``hidden_NxD`` and ``lm_head_DxV``; the
      gradients come back in the input dtypes.

    Under a mesh, call Pallas impls inside ``shard_map`` with the token axis sharded and the
    vocab axis whole on each device (a vocab-sharded head would need a cross-device log-sum-exp).
    """
    if hidden_NxD.ndim != 2 or lm_head_DxV.ndim != 2 or targets_N.ndim != 1:
        raise ValueError(
            f"token_logprobs wants hidden [N, D], lm_head [D, V], targets [N]; got "
            f"{hidden_NxD.shape}, {lm_head_DxV.shape}, {targets_N.shape}.")
    n_tokens, model_dim = hidden_NxD.shape
    if lm_head_DxV.shape[0] != model_dim or targets_N.shape[0] != n_tokens:
        raise ValueError(
            f"token_logprobs: shapes disagree: hidden {hidden_NxD.shape}, lm_head "
            f"{lm_head_DxV.shape}, targets {targets_N.shape} (want [N, D], [D, V], [N]).")
    if not jnp.issubdtype(targets_N.dtype, jnp.integer):
        raise ValueError(f"token_logprobs: targets must be integer ids, got {targets_N.dtype}.")
    try:
        temperature = float(temperature)
    except (TypeError, jax.errors.ConcretizationTypeError) as err:
        raise ValueError("token_logprobs: temperature must be a static Python float.") from err
    if not temperature > 0:
        raise ValueError(f"token_logprobs: temperature must be > 0, got {temperature}.")
    impl = resolve_impl(impl)
    dtype = jnp.result_type(hidden_NxD.dtype, lm_head_DxV.dtype)
    hidden_NxD, lm_head_DxV = hidden_NxD.astype(dtype), lm_head_DxV.astype(dtype)
    if impl == "reference" or n_tokens == 0:
        return token_logprobs_reference(hidden_NxD, lm_head_DxV, targets_N, temperature=temperature,
                                        return_entropy=return_entropy)
    vmem = logprob_tpu.vmem_capacity_bytes() if impl == "pallas_tpu" else bs.TPU_DEFAULT_VMEM_BYTES
    if block_sizes is None:
        block_sizes = bs.LogprobBlockSizes.default(impl, model_dim=model_dim,
                                                   itemsize=jnp.dtype(dtype).itemsize,
                                                   vmem_bytes=vmem)
    block_sizes.validate(impl, model_dim=model_dim, itemsize=jnp.dtype(dtype).itemsize,
                         vmem_bytes=vmem)
    plan = _Plan(impl=impl, inv_temp=1.0 / temperature, with_entropy=bool(return_entropy),
                 blocks=block_sizes, interpret=interpret)
    return _streamed(hidden_NxD, lm_head_DxV, targets_N, plan)
