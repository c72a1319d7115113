"""The paged engine's prompts: prefilled once, in chunks, and written to pages that the G samples
of each prompt share (``r1jax.rollout.paged``)."""
from __future__ import annotations

import jax.numpy as jnp

from r1jax import models
from r1jax.rollout import router_replay
from r1jax.rollout.paged_plan import PagedPlan
from r1jax.sharding import Sharding


def prefill(cfg, params, prompt_PxLp, mask_PxLp, chunk: int, record_experts: bool = False,
             sharding: Sharding | None = None):
    """The prompts' last logits ``[P, V]``, dense cache and (``record_experts``) expert choices
    ``[P, Lp, Y, A]``, else None, prefilled ``chunk`` tokens at a time (attention scores
    ``[P, chunk, Lp]`` instead of ``[P, Lp, Lp]``). ``sharding``: inside the engine's
    ``shard_map`` (``Sharding.manual_rows``), for expert parallelism."""
    num_prompts, prompt_len = prompt_PxLp.shape
    cache = models.init_cache(cfg, num_prompts, prompt_len)
    experts = []
    for start in range(0, prompt_len, chunk):
        out = models.forward(cfg, params, prompt_PxLp[:, start:start + chunk],
                             attention_mask_BxL=mask_PxLp[:, start:start + chunk], cache=cache,
                             sharding=sharding)
        cache = out.cache
        if record_experts:
            experts.append(router_replay.tokens_first(cfg, out.moe_stats.expert_indices))
    logits_PxV = jnp.dot(out.hidden_BxLxD[:, -1], out.lm_head_DxV,
                         preferred_element_type=jnp.float32)
    return logits_PxV, cache, jnp.concatenate(experts, axis=1) if experts else None


def pages_of_prompts(cfg, cache, prompt_len_P, plan: PagedPlan, pages: int | None = None):
    """The pools (of ``pages`` pages, default the plan's) with every prompt's real tokens written
    to its pages (prompt p's pages follow prompt p-1's), each prompt's page-table row, and how
    many pages the prompts use. Per layer ``(keys, values)`` ``[K, N, P, E]``; for MLA
    ``(None, entries [1, N, P, R + Er])`` (``slot_cache``: the entries are the keys)."""
    size, pages = plan.page_size, pages or plan.kv_pages
    num_prompts, width = cache.valid_BxS.shape
    pages_P = -(-prompt_len_P // size)
    first_P = jnp.cumsum(pages_P) - pages_P
    # Left padding: the prompt's j-th real token sits in column width - length + j.
    j_PxL = jnp.arange(width)[None, :] - (width - prompt_len_P)[:, None]
    real_PxL = j_PxL >= 0
    page_PxL = jnp.where(real_PxL, first_P[:, None] + j_PxL // size, pages)  # pages: dropped
    offset_PxL = jnp.where(real_PxL, j_PxL % size, 0)

    def to_pool(dense_PxKxLxE):
        kv_heads, width = dense_PxKxLxE.shape[1], dense_PxKxLxE.shape[3]
        pool = jnp.zeros((kv_heads, pages, size, width), dense_PxKxLxE.dtype)
        return pool.at[:, page_PxL, offset_PxL, :].set(dense_PxKxLxE.transpose(1, 0, 2, 3),
                                                       mode="drop")

    if cfg.is_mla:
        pools = tuple((None, to_pool(jnp.concatenate([c, k_pe], axis=-1)[:, None]))
                      for c, k_pe in zip(cache.latents, cache.rope_keys))
    else:
        pools = tuple((to_pool(k), to_pool(v)) for k, v in zip(cache.keys, cache.values))
    i_M = jnp.arange(plan.table_width)
    table_PxM = jnp.where(i_M[None, :] < pages_P[:, None], first_P[:, None] + i_M[None, :], 0)
    return pools, table_PxM, pages_P, jnp.sum(pages_P)
