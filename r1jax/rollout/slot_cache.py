"""The paged engine's layout where attention is a gather (CPU, GPU): shared prompt pages and one
reserved row of generated positions per slot.

The XLA attention over a page table (``kernels.ragged_paged_attention(impl="xla")``) gathers every
table page of every slot into a dense buffer at every step and layer: on a CPU that element-wise
gather, not the matmuls, is most of a decode step. When the pool holds every slot's worst case
anyway (``PagedPlan.slot_rows``: the default pool), nothing is gained by scattering a slot's
generated tokens over pages, so the engine keeps them in a row of its own, laid out for the
matmuls like the lockstep engine's cache: keys ``[S, K, E, L]`` (the scores are a plain matmul),
values ``[S, K, L, E]``. The prompts stay in pages that the G samples of each prompt share
(prefilled once, never copied); a step gathers only the prompt pages of each slot. The memory is
the same as the pages' (prompt pages plus ``S`` times the generated pages); an overcommitted pool
(a smaller ``kv_pages``) uses the pages throughout.

The attention of one new token per slot, over its prompt's real tokens ``i < n_s`` and its own
generated positions ``j <= t_s``, is one softmax over both parts:

    out = (Σ_i e^(q·k_i - m) v_i + Σ_j e^(q·k_j - m) v_j) / (Σ_i e^(q·k_i - m) + Σ_j e^(q·k_j - m))

with ``m`` the largest valid score (f32 scores and softmax; q arrives scaled).

Multi-head Latent Attention (``mla.absorbed_query``) attends with one head of entries that are
both its keys and its values (the latent and the rope key): its rows and pages hold each entry
once, as values ``[S, 1, L, R + Er]`` / ``[1, N, P, R + Er]``, and None stands where the keys
would be; the scores are then taken against the values' layout.
"""
from __future__ import annotations

import jax.numpy as jnp

from r1jax.models import ModelConfig


def init_slot_rows(cfg: ModelConfig, slots: int, positions: int):
    """Empty generated rows for ``slots`` slots, per layer: ``(keys [S, K, E, L], values
    [S, K, L, E])`` in the activation dtype; an MLA model's ``(None, entries [S, 1, L, C])``."""
    dtype, kv, head_dim = cfg.activation_dtype, cfg.num_kv_heads, cfg.head_dim
    if cfg.is_mla:
        width = cfg.kv_lora_rank + cfg.qk_rope_head_dim
        return tuple((None, jnp.zeros((slots, 1, positions, width), dtype))
                     for _ in range(cfg.num_layers))
    return tuple((jnp.zeros((slots, kv, head_dim, positions), dtype),
                  jnp.zeros((slots, kv, positions, head_dim), dtype))
                 for _ in range(cfg.num_layers))


def grow_slot_rows(keys_SxKxExL, values_SxKxLxE, positions: int):
    """One layer's rows padded with empty positions up to ``positions`` (between segments)."""
    grow = positions - values_SxKxLxE.shape[2]
    values = jnp.pad(values_SxKxLxE, ((0, 0), (0, 0), (0, grow), (0, 0)))
    if keys_SxKxExL is None:  # MLA: the entries are the keys
        return None, values
    return jnp.pad(keys_SxKxExL, ((0, 0), (0, 0), (0, 0), (0, grow))), values


def write_slot_rows(keys_SxKxExL, values_SxKxLxE, k_SxKxE, v_SxKxE, at_S):
    """Store each slot's new key and value at its generated position ``at_S`` (an idle slot
    passes a position past the row, which drops its write).

    Values are stored finite: a later sample of the slot reads this row with weight exactly 0
    beyond its own positions, and 0 · NaN would not be 0. A sample whose state is NaN stays NaN
    (its own query and key are). With no keys (MLA) ``k_SxKxE`` is the entry and ``v_SxKxE``
    None."""
    s_S = jnp.arange(k_SxKxE.shape[0])
    v_SxKxE = k_SxKxE if v_SxKxE is None else v_SxKxE
    v_SxKxE = jnp.where(jnp.isfinite(v_SxKxE), v_SxKxE, 0)
    if keys_SxKxExL is None:
        keys = None
    else:
        keys = keys_SxKxExL.at[s_S, :, :, at_S].set(k_SxKxE.astype(keys_SxKxExL.dtype),
                                                    mode="drop")
    values = values_SxKxLxE.at[s_S, :, at_S, :].set(v_SxKxE.astype(values_SxKxLxE.dtype),
                                                    mode="drop")
    return keys, values


def transpose_key_pages(k_pages_KxNxPxE):
    """Prompt key pages in the ``[K, N, E, P]`` layout ``prefix_slot_attention`` reads (once per
    call: on a CPU a matmul against gathered ``[.., P, E]`` keys costs several times more)."""
    return jnp.swapaxes(k_pages_KxNxPxE, 2, 3)


def prefix_slot_attention(q_SxKxQxE, k_pages_KxNxExP, v_pages_KxNxPxE, prompt_table_SxM,
                          prompt_len_S, keys_SxKxExL, values_SxKxLxE, last_S):
    """Each slot's new token attending to its prompt's real tokens (``prompt_len_S`` of them, on
    the pages of ``prompt_table_SxM``; keys in ``transpose_key_pages``'s layout) and to its
    generated positions ``0 … last_S`` (-1: none) in its row. Returns ``[S, K, Q, E]`` in q's
    dtype; a slot with nothing valid gives 0. Keys None (both, or neither): the values are the
    keys (MLA)."""
    num_seqs, kv_heads, _, head_dim = q_SxKxQxE.shape
    page_size, prompt_pages = v_pages_KxNxPxE.shape[2], prompt_table_SxM.shape[1]
    prompt_positions, positions = prompt_pages * page_size, values_SxKxLxE.shape[2]
    heads_1xKx1 = jnp.arange(kv_heads, dtype=jnp.int32)[None, :, None]
    pages_Sx1xM = jnp.clip(prompt_table_SxM, 0, v_pages_KxNxPxE.shape[1] - 1)[:, None, :]
    prompt_values_SxKxLxE = v_pages_KxNxPxE[heads_1xKx1, pages_Sx1xM].reshape(
        num_seqs, kv_heads, prompt_positions, head_dim)

    prompt_valid_SxL = jnp.arange(prompt_positions)[None, :] < prompt_len_S[:, None]
    own_valid_SxL = jnp.arange(positions)[None, :] <= last_S[:, None]
    dtype = values_SxKxLxE.dtype
    q = q_SxKxQxE.astype(dtype)
    if keys_SxKxExL is None:
        prompt_scores = jnp.einsum("skqe,skle->skql", q, prompt_values_SxKxLxE.astype(dtype),
                                   preferred_element_type=jnp.float32)
        own_scores = jnp.einsum("skqe,skle->skql", q, values_SxKxLxE,
                                preferred_element_type=jnp.float32)
    else:
        # [S, K, M, E, P] -> [S, K, E, M·P]: a plain matmul for the scores, like the rows.
        prompt_keys_SxKxExL = jnp.swapaxes(k_pages_KxNxExP[heads_1xKx1, pages_Sx1xM], 2,
                                           3).reshape(num_seqs, kv_heads, head_dim,
                                                      prompt_positions)
        prompt_scores = jnp.einsum("skqe,skel->skql", q, prompt_keys_SxKxExL.astype(dtype),
                                   preferred_element_type=jnp.float32)
        own_scores = jnp.einsum("skqe,skel->skql", q, keys_SxKxExL,
                                preferred_element_type=jnp.float32)
    prompt_scores = jnp.where(prompt_valid_SxL[:, None, None], prompt_scores, -jnp.inf)
    own_scores = jnp.where(own_valid_SxL[:, None, None], own_scores, -jnp.inf)
    m = jnp.maximum(jnp.max(prompt_scores, axis=-1, keepdims=True),
                    jnp.max(own_scores, axis=-1, keepdims=True))
    m = jnp.where(m == -jnp.inf, 0.0, m)  # nothing valid: every weight is exp(-inf) = 0
    prompt_p, own_p = jnp.exp(prompt_scores - m), jnp.exp(own_scores - m)
    total = jnp.sum(prompt_p, axis=-1, keepdims=True) + jnp.sum(own_p, axis=-1, keepdims=True)
    # Prompt pages of other prompts, past this prompt's length, are masked out of v as well.
    prompt_v = jnp.where(prompt_valid_SxL[:, None, :, None], prompt_values_SxKxLxE, 0)
    out = (jnp.einsum("skql,skle->skqe", prompt_p.astype(dtype), prompt_v.astype(dtype),
                      preferred_element_type=jnp.float32)
           + jnp.einsum("skql,skle->skqe", own_p.astype(dtype), values_SxKxLxE,
                        preferred_element_type=jnp.float32))
    out = out / jnp.where(total > 0, total, 1.0)
    return out.astype(q_SxKxQxE.dtype)


def rows_in_use(active_S, last_S, page_size: int):
    """Pages' worth of generated positions the running slots hold (for the peak-use report)."""
    return jnp.sum(jnp.where(active_S, last_S // page_size + 1, 0))
