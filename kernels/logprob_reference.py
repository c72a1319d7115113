"""Token log-probs: the math, the materializing reference, and the per-tile formulas impls share.

Notation (per token row n, vocab column v, temperature T):
  z_nv    = (h_n . W_:v) / T                              scaled logits
  lse_n   = log sum_v exp(z_nv)                           log-sum-exp
  p_nv    = exp(z_nv - lse_n)                             softmax(z)
  logp_n  = z_{n,t_n} - lse_n                             log-prob of the target token t_n
  H_n     = -sum_v p_nv log p_nv = lse_n - E_p[z]_n       entropy of softmax(z)
  E_p[z]_n = sum_v p_nv z_nv                              expected scaled logit

Backward, with cotangents g_n (of logp_n) and e_n (of H_n):
  d logp_n / d z_nv = 1[v = t_n] - p_nv
  d H_n    / d z_nv = -p_nv (z_nv - E_p[z]_n)
  dz_nv  = g_n (1[v = t_n] - p_nv) - e_n p_nv (z_nv - E_p[z]_n)
  dh     = (dz / T) W^T          (reduce over V)
  dW     = h^T (dz / T)          (reduce over N)
so the backward needs only O(N) residuals, lse_n and E_p[z]_n, besides the inputs: every impl
other than ``token_logprobs_reference`` recomputes z one tile at a time.

The online log-sum-exp keeps per row a running max m, l = sum exp(z - m), s = sum exp(z - m) z
and the target logit; a new tile with max m' rescales l and s by exp(m - m') (Milakov &
Gimelshein 2018).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax



def matmul_precision(dtype):
    """HIGHEST for f32 operands, DEFAULT otherwise.

    f32 inputs must not silently become bf16 / TF32 passes (the GRPO ratio exp(logp - logp_old)
    amplifies log-prob error); bf16 products are exact in the f32 accumulator anyway, and Mosaic
    rejects an fp32 contract precision on bf16 operands.
    """
    return lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else lax.Precision.DEFAULT



def token_logprobs_reference(hidden_NxD, lm_head_DxV, targets_N, *, temperature=1.0,
                             return_entropy=False):
    """Materializes the [N, V] logits in f32; plain autodiff gives its gradients. Tests only.

    Returns ``(logp_N, entropy_N or None)`` in float32.
    """
    logits_NxV = jnp.dot(hidden_NxD, lm_head_DxV, precision=matmul_precision(hidden_NxD.dtype),
                         preferred_element_type=jnp.float32) / temperature
    logsm_NxV = jax.nn.log_softmax(logits_NxV, axis=-1)
    logp_N = jnp.take_along_axis(logsm_NxV, targets_N[:, None].astype(jnp.int32), axis=-1)[:, 0]
    if not return_entropy:
        return logp_N, None
    entropy_N = -jnp.sum(jnp.exp(logsm_NxV) * logsm_NxV, axis=-1)
    return logp_N, entropy_N


def online_softmax_step(z_nxv, hit_nxv, m_n1, l_n1, zt_n1, s_n1, valid_nxv=None):
    """One online log-sum-exp step over a logits tile ``z`` (rows x tile columns, f32).

    ``hit`` marks the target column of each row; ``valid`` (None = all) marks real vocab columns,
    whose complement is already -inf in ``z``.  ``s`` may be None when entropy is not wanted.
    Row statistics have shape [rows, 1] (Mosaic-friendly: no rank-1 vectors).
    """
    if valid_nxv is not None:  # a target id never names a masked column
        hit_nxv = hit_nxv & valid_nxv
    m_new = jnp.maximum(m_n1, jnp.max(z_nxv, axis=1, keepdims=True))
    # m_new is finite: every tile holds at least one real column.  m_n1 = -inf gives alpha = 0.
    alpha = jnp.exp(m_n1 - m_new)
    p_nxv = jnp.exp(z_nxv - m_new)
    l_new = alpha * l_n1 + jnp.sum(p_nxv, axis=1, keepdims=True)
    zt_new = zt_n1 + jnp.sum(jnp.where(hit_nxv, z_nxv, 0.0), axis=1, keepdims=True)
    s_new = None
    if s_n1 is not None:
        pz = p_nxv * z_nxv
        if valid_nxv is not None:  # masked columns have p = 0, z = -inf: 0 * -inf would be NaN.
            pz = jnp.where(valid_nxv, pz, 0.0)
        s_new = alpha * s_n1 + jnp.sum(pz, axis=1, keepdims=True)
    return m_new, l_new, zt_new, s_new


def finish_online_softmax(m_n1, l_n1, zt_n1, s_n1):
    """(logp, lse, E_p[z]) from the running statistics; E_p[z] is None without entropy."""
    lse = m_n1 + jnp.log(l_n1)
    ez = None if s_n1 is None else s_n1 / l_n1
    return zt_n1 - lse, lse, ez


def logits_cotangent(z_nxv, hit_nxv, lse_n1, g_n1, ez_n1=None, e_n1=None):
    """dz = g (1[v=t] - p) - e p (z - E_p[z]) for a logits tile; see the module docstring.

    ``z`` must already be -inf on masked columns (so p = 0 there); callers zero dz on masked
    columns and rows with a select, since z - E_p[z] is -inf there and garbage rows may be NaN.
    """
    p_nxv = jnp.exp(z_nxv - lse_n1)
    dz = g_n1 * (hit_nxv.astype(jnp.float32) - p_nxv)
    if e_n1 is not None:
        dz = dz - e_n1 * p_nxv * (z_nxv - ez_n1)
    return dz
