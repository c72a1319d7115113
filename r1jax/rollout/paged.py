"""Continuous batching over a paged KV cache: the rollout engine for long, long-tailed responses.

R1's completions are long and their lengths long-tailed: a lockstep batch runs until its longest
row stops, and holds ``P·G·(prompt + max_new)`` cache slots, most of them padding. Here:

* **Pages.** Keys and values live in a pool of ``kv_pages`` pages of ``page_size`` tokens per layer
  (``[K, N, P, E]``); each sequence has a row of the page table, and free pages sit on a stack.
  Prompts are prefilled once (in chunks of ``prefill_chunk`` tokens; ``prompt_pages``) and
  written to pages that all G samples of the prompt share: a sample's page-table row starts with
  its prompt's pages, and its own tokens start on a fresh page, so nothing is ever copied (the
  rest of the prompt's last page is a hole that attention skips).
* **Slots.** ``decode_slots`` sequences decode at once. Every step, free slots take the waiting
  samples in id order; a slot whose sample stops returns its pages to the pool at once. Each step
  takes a page from the pool for every slot that starts a page; when the pool runs dry those slots
  wait, and if every slot waits the newest sample is preempted (its pages freed, itself queued
  again): it restarts from its first token and, since randomness depends on the position only,
  redoes the same tokens. Nothing is truncated and nothing crashes.
* **Compiled.** Admission, paging and sampling are array operations inside one ``while_loop``
  (no host round trip, no recompile per batch); attention is ``kernels.ragged_paged_attention``
  (a Pallas kernel on TPU that reads only each sequence's own pages, a gather elsewhere).
* **Slot rows.** Where attention is a gather (CPU, GPU) and the pool holds every slot's worst
  case (the default pool, ``PagedPlan.slot_rows``), each slot's generated tokens live in a row of
  its own instead of on pages, so that a step gathers only prompt pages (``slot_cache``): the
  same memory, and on a CPU a decode step as cheap as the lockstep engine's. A smaller
  ``kv_pages`` (an overcommitted pool) pages everything.
* **Same results.** Sample ``b``'s token ``t`` uses the uniform ``u[t, b]`` of the call's one
  ``[T, B]`` draw, exactly as the lockstep engine does, so the tokens do not depend on the slot
  count or on when a sample ran; only the float rounding of the logits differs.
* **Multi-head Latent Attention.** A DeepSeek model's pages (and slot rows) hold one entry per
  token, its latent and rope key (``R + Er`` values: 576 for DeepSeek-V3, against 40,960 for
  full keys and values), which serves as both key and value of a single-head attention with the
  up-projections absorbed (``mla.absorbed_query``): the same kernel, K = 1 and Q = H.
* **Expert parallelism.** Each batch shard decodes in a ``shard_map`` of its own. With an
  ``expert`` mesh axis a device holds only its experts' weights there (``shards.
  expert_param_specs``; everything else whole), the loops of an expert group step together (their
  loop conditions are reduced over ``expert``), and every MoE layer exchanges the group's tokens
  with explicit collectives (``Sharding.manual_rows``; ``moe._on_expert_group``).
* **Router replay.** With ``record_experts`` (a mixture of experts) the loop also writes the
  experts each MoE layer chose for the token a slot fed back to the sample's row
  (``router_replay``); a restarted sample rewrites its own.

Use it through ``rollout.generate(engine="paged")``.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels.paged_attention import ragged_paged_attention, resolve_impl
from r1jax.models import ModelConfig, decode, mla
from r1jax.models.layers import rope_tables
from r1jax.rollout import prompt_pages, router_replay, slot_cache
from r1jax.rollout import paged_plan
from r1jax.rollout.paged_plan import PagedPlan, ceil_div
from r1jax.rollout.sampling import SamplingParams, sample_with_uniform
from r1jax.rollout.shards import expert_param_specs, on_each_shard, row_axes, step_uniforms
from r1jax.rollout.stops import StopCriteria
from r1jax.sharding import Sharding


_BIG = ("pools", "tokens_BxT", "logprobs_BxT", "experts_BxTxYxA")


def _segment_widths(plan: PagedPlan, attention_impl: str, segments: int = 8) -> list[int]:
    """Page-table widths of the decode loop's segments: growing ones where attention costs the
    width it is given (the XLA gather), the full width where it costs each sequence's own pages
    (the TPU kernel)."""
    if resolve_impl(attention_impl) == "pallas_tpu":
        return [plan.table_width]
    widths = {plan.prompt_pages + ceil_div(plan.generated_pages * k, segments)
              for k in range(1, segments + 1)}
    return sorted(w for w in widths if w > plan.prompt_pages)


def _skip_unless(pred, update, s):
    """``update(s)`` if ``pred``, else ``s``: most steps neither free a slot nor fill one, so the
    bookkeeping is skipped then. The pools and output buffers stay out of the branch (which
    neither reads nor writes them), so that they are never copied."""
    small = {k: v for k, v in s.items() if k not in _BIG}
    small = jax.lax.cond(pred, update, lambda x: x, small)
    return {**s, **small}


def _latent_attention(cfg: ModelConfig, attend, rope):
    """An MLA layer's attention for ``decode_step_with`` over the paged engine's ``attend``: the
    absorbed query and the token's entry as one key/value head (``mla.absorbed_query``)."""
    mla_cfg = mla.mla_config_of(cfg)

    def attention(h_SxD, p, cache):
        q_SxHxC, entry_SxC = mla.absorbed_query(mla_cfg, p, h_SxD, rope)
        out_Sx1xHxC, cache = attend(q_SxHxC[:, None], entry_SxC[:, None], None, cache)
        return mla.absorbed_output(mla_cfg, p, out_Sx1xHxC[:, 0]), cache

    return attention


@functools.lru_cache(maxsize=32)
def compiled_paged(cfg: ModelConfig, sampling: SamplingParams, stops: StopCriteria,
                   group_size: int, max_new_tokens: int, pad_id: int, plan: PagedPlan,
                   sharding: Sharding | None, attention_impl: str = "auto",
                   record_experts: bool = False):
    """One jitted paged rollout per static setting: ``fn(params, prompt_PxLp, mask_PxLp,
    budgets_B, rng)`` → ``(tokens, lengths, mask, logprobs, stopped, decode_steps, slot_steps,
    peak_pages, preemptions)``; with ``record_experts`` the prompts' and the completions' expert
    choices (``router_replay``) follow ``stopped``."""
    T, slots, size = max_new_tokens, plan.decode_slots, plan.page_size
    rows = plan.slot_rows
    widths = _segment_widths(plan, attention_impl)

    def run(params, prompt_PxLp, mask_PxLp, u_TxB, budgets_B, inner: Sharding | None = None):
        """One shard's rollout; ``inner``: the mesh seen from inside the ``shard_map`` when the
        experts are split over it (each device then holds its own experts and the loops of an
        expert group step together: every MoE layer exchanges their tokens)."""
        num_prompts, prompt_len = prompt_PxLp.shape
        batch = num_prompts * group_size
        if inner is None:
            group_any, group_all = (lambda x: x), (lambda x: x)
        else:
            group_any = lambda x: jax.lax.pmax(x.astype(jnp.int32), "expert") > 0  # noqa: E731
            group_all = lambda x: jax.lax.pmin(x.astype(jnp.int32), "expert") > 0  # noqa: E731
        logits_PxV, cache, prompt_experts_PxLpxYxA = prompt_pages.prefill(
            cfg, params, prompt_PxLp, mask_PxLp, plan.prefill_chunk, record_experts, inner)
        prompt_len_P = jnp.sum(mask_PxLp, axis=1, dtype=jnp.int32)
        pools, prompt_table_PxM, prompt_pages_P, used = prompt_pages.pages_of_prompts(
            cfg, cache, prompt_len_P, plan, plan.kv_pages - slots * plan.generated_pages if rows
            else None)
        if rows:  # grown to each segment's width below
            pools = tuple(((None if k is None else slot_cache.transpose_key_pages(k), v), own)
                          for (k, v), own in zip(pools, slot_cache.init_slot_rows(cfg, slots, 0)))

        def draw(step_S, b_S, logits_SxV):
            if u_TxB is None:
                return sample_with_uniform(None, logits_SxV, sampling)
            return sample_with_uniform(u_TxB[step_S, b_S], logits_SxV, sampling)

        # Every sample's first token comes from its prompt's prefill logits.
        b_B = jnp.arange(batch, dtype=jnp.int32)
        token0_B, logprob0_B = draw(jnp.zeros_like(b_B), b_B,
                                    jnp.repeat(logits_PxV, group_size, axis=0))
        recent0_BxM = jnp.full((batch, stops.window), -1, jnp.int32).at[:, -1].set(token0_B)
        hit0_B = stops.hit(token0_B, recent0_BxM)
        state = dict(
            step=jnp.zeros((), jnp.int32),
            tokens_BxT=jnp.full((batch, T), pad_id, jnp.int32).at[:, 0].set(token0_B),
            logprobs_BxT=jnp.zeros((batch, T), jnp.float32).at[:, 0].set(logprob0_B),
            lengths_B=jnp.ones((batch,), jnp.int32),
            stopped_B=hit0_B,
            pending_B=~(hit0_B | (budgets_B <= 1)),
            slot_b_S=jnp.full((slots,), -1, jnp.int32),
            slot_t_S=jnp.zeros((slots,), jnp.int32),  # tokens the slot's sample has so far
            slot_gen_pages_S=jnp.zeros((slots,), jnp.int32),
            table_SxM=jnp.zeros((slots, plan.table_width), jnp.int32),
            recent_SxM=jnp.full((slots, stops.window), -1, jnp.int32),
            free_N=(jnp.arange(plan.kv_pages, dtype=jnp.int32) + used) % plan.kv_pages,
            num_free=plan.kv_pages - used,
            peak_pages=used,
            preemptions=jnp.zeros((), jnp.int32),
            pools=pools,
        )
        if record_experts:
            state["experts_BxTxYxA"] = router_replay.empty_record(cfg, batch, T)
        # Fused q/k/v and gate/up save kernel calls on CPU; elsewhere they would copy the weights.
        weights = decode.prepare_weights(cfg, params, fuse=jax.default_backend() == "cpu")
        rope_all = rope_tables(cfg, jnp.arange(prompt_len + T, dtype=jnp.int32),
                               max_position=prompt_len + T)
        s_S = jnp.arange(slots)

        def admit(s):
            """Free slots take the waiting samples in id order, as long as the pool has a page
            for each of them beyond the pages the running slots need this step."""
            active_S = s["slot_b_S"] >= 0
            if rows:  # slot rows never run out of room
                room = slots
            else:
                need = jnp.sum(active_S & ((s["slot_t_S"] - 1) % size == 0))
                room = jnp.maximum(s["num_free"] - need, 0)
            free_S = ~active_S
            rank_S = jnp.cumsum(free_S) - 1
            waiting = jnp.cumsum(s["pending_B"])
            take_S = free_S & (rank_S < jnp.minimum(waiting[-1], room))
            b_S = jnp.where(take_S, jnp.searchsorted(waiting, rank_S + 1), s["slot_b_S"])
            p_S = jnp.maximum(b_S, 0) // group_size
            token0_S = token0_B[jnp.maximum(b_S, 0)]
            fresh_SxM = jnp.full_like(s["recent_SxM"], -1).at[:, -1].set(token0_S)
            return dict(
                s,
                slot_b_S=b_S,
                slot_t_S=jnp.where(take_S, 1, s["slot_t_S"]),
                slot_gen_pages_S=jnp.where(take_S, 0, s["slot_gen_pages_S"]),
                table_SxM=jnp.where(take_S[:, None], prompt_table_PxM[p_S], s["table_SxM"]),
                recent_SxM=jnp.where(take_S[:, None], fresh_SxM, s["recent_SxM"]),
                pending_B=s["pending_B"].at[jnp.where(take_S, b_S, batch)].set(False,
                                                                               mode="drop"),
            )

        def release(s, release_S):
            """Return the generated pages of the ``release_S`` slots to the pool; free them."""
            p_S = jnp.maximum(s["slot_b_S"], 0) // group_size
            j_G = jnp.arange(plan.generated_pages)
            own_SxG = release_S[:, None] & (j_G[None, :] < s["slot_gen_pages_S"][:, None])
            index_SxG = prompt_pages_P[p_S][:, None] + j_G[None, :]
            page_SxG = jnp.take_along_axis(s["table_SxM"], index_SxG, axis=1, mode="clip")
            at = s["num_free"] + jnp.cumsum(own_SxG.reshape(-1)) - 1
            free_N = s["free_N"].at[jnp.where(own_SxG.reshape(-1), at, plan.kv_pages)].set(
                page_SxG.reshape(-1), mode="drop")
            return dict(s, free_N=free_N, num_free=s["num_free"] + jnp.sum(own_SxG),
                        slot_b_S=jnp.where(release_S, -1, s["slot_b_S"]),
                        slot_gen_pages_S=jnp.where(release_S, 0, s["slot_gen_pages_S"]))

        def step(s, width):
            s = _skip_unless(jnp.any(s["slot_b_S"] < 0) & jnp.any(s["pending_B"]), admit, s)
            b_S, t_S = s["slot_b_S"], s["slot_t_S"]
            active_S = b_S >= 0
            b0_S, p_S = jnp.maximum(b_S, 0), jnp.maximum(b_S, 0) // group_size
            prompt_pages_S = prompt_pages_P[p_S]
            # The fed token (the sample's token t - 1) goes to generated position t - 1.
            fed_S = t_S - 1
            column_S = prompt_pages_S + fed_S // size
            table_SxM, num_free = s["table_SxM"], s["num_free"]
            if rows:  # slot rows take no pages: every running slot advances
                granted_S, advance_S = jnp.zeros_like(active_S), active_S
                in_use = used + slot_cache.rows_in_use(advance_S, fed_S, size)
            else:  # a slot starting a page takes one from the stack, or waits
                need_S = active_S & (fed_S % size == 0)
                rank_S = jnp.cumsum(need_S) - 1
                granted_S = need_S & (rank_S < num_free)
                page_S = s["free_N"][jnp.clip(num_free - 1 - rank_S, 0, plan.kv_pages - 1)]
                table_SxM = table_SxM.at[s_S, jnp.where(granted_S, column_S, plan.table_width)
                                         ].set(page_S, mode="drop")
                num_free = num_free - jnp.sum(granted_S)
                advance_S = active_S & ~(need_S & ~granted_S)
                in_use = plan.kv_pages - num_free
            virtual_S = prompt_pages_S * size + fed_S
            write_S = jnp.where(advance_S, table_SxM[s_S, column_S], plan.kv_pages)
            offset_S = fed_S % size
            kv_lens_S = jnp.where(advance_S, virtual_S + 1, 0)
            hole_S = prompt_len_P[p_S]
            rope = tuple(t[prompt_len_P[p_S] + fed_S] for t in rope_all)

            def attend_rows(q_SxKxQxE, k_SxKxE, v_SxKxE, cache):
                prompt_pool, (keys, values) = cache
                keys, values = slot_cache.write_slot_rows(
                    keys, values, k_SxKxE, v_SxKxE, jnp.where(advance_S, fed_S, values.shape[2]))
                out = slot_cache.prefix_slot_attention(
                    q_SxKxQxE, *prompt_pool, table_SxM[:, :plan.prompt_pages], hole_S, keys,
                    values, jnp.where(advance_S, fed_S, -1))
                return out, (prompt_pool, (keys, values))

            def attend(q_SxKxQxE, k_SxKxE, v_SxKxE, pool):
                """(v None: the pools' keys are their values, as for MLA.)"""
                k_pool, v_pool = pool

                def write(pool, x_SxKxE):
                    return pool.at[:, write_S, offset_S, :].set(
                        x_SxKxE.transpose(1, 0, 2).astype(pool.dtype), mode="drop")

                if v_SxKxE is None:
                    v_pool = write(v_pool, k_SxKxE)
                else:
                    k_pool, v_pool = write(k_pool, k_SxKxE), write(v_pool, v_SxKxE)
                keys, values = (v_pool, None) if k_pool is None else (k_pool, v_pool)
                out = ragged_paged_attention(q_SxKxQxE, keys, values, table_SxM[:, :width],
                                             kv_lens_S, hole_S, impl=attention_impl)
                return out, (k_pool, v_pool)

            attention = attend_rows if rows else attend
            if cfg.is_mla:
                attention = _latent_attention(cfg, attention, rope)
            token_S = s["tokens_BxT"][b0_S, fed_S]
            logits_SxV, pools, experts_SxYxA = decode.decode_step_with(
                cfg, weights, token_S, rope, attention, s["pools"], inner)
            new_S, logprob_S = draw(jnp.minimum(t_S, T - 1), b0_S, logits_SxV)
            recent_SxM = jnp.where(advance_S[:, None], jnp.concatenate(
                [s["recent_SxM"][:, 1:], new_S[:, None]], axis=1), s["recent_SxM"])
            hit_S = stops.hit(new_S, recent_SxM)
            row_S = jnp.where(advance_S, b0_S, batch)
            finished_S = advance_S & (hit_S | (t_S + 1 >= budgets_B[b0_S]))
            s = dict(
                s,
                step=s["step"] + 1,
                pools=pools,
                table_SxM=table_SxM,
                slot_gen_pages_S=s["slot_gen_pages_S"] + granted_S,
                num_free=num_free,
                peak_pages=jnp.maximum(s["peak_pages"], in_use),
                tokens_BxT=s["tokens_BxT"].at[row_S, t_S].set(new_S, mode="drop"),
                logprobs_BxT=s["logprobs_BxT"].at[row_S, t_S].set(logprob_S, mode="drop"),
                lengths_B=s["lengths_B"].at[row_S].set(t_S + 1, mode="drop"),
                stopped_B=s["stopped_B"].at[jnp.where(finished_S, b0_S, batch)].set(
                    hit_S, mode="drop"),
                slot_t_S=t_S + advance_S,
                recent_SxM=recent_SxM,
            )
            if record_experts:
                s["experts_BxTxYxA"] = router_replay.record_slots(
                    s["experts_BxTxYxA"], experts_SxYxA, row_S, fed_S)
            # Every running slot waits for a page: preempt the newest sample.
            stuck = jnp.any(active_S) & ~jnp.any(advance_S)
            evict_S = stuck & (s_S == jnp.argmax(jnp.where(active_S, b_S, -1)))
            s = dict(s, pending_B=s["pending_B"].at[jnp.where(evict_S, b0_S, batch)].set(
                True, mode="drop"), preemptions=s["preemptions"] + stuck)
            done_S = finished_S | evict_S
            return _skip_unless(jnp.any(done_S), lambda s: release(s, done_S), s)

        def running(s):
            return jnp.any(s["slot_b_S"] >= 0) | jnp.any(s["pending_B"])

        def fits(s, width):
            """Whether the next step's slots need at most ``width`` page-table columns (a
            sample admitted next needs its prompt's pages and one more)."""
            p_S = jnp.maximum(s["slot_b_S"], 0) // group_size
            # Slot rows start after the bucket's pages, whatever the prompt's own length.
            prompt_pages_S = plan.prompt_pages if rows else prompt_pages_P[p_S]
            need_S = prompt_pages_S + (s["slot_t_S"] - 1) // size + 1
            return jnp.max(jnp.where(s["slot_b_S"] >= 0, need_S, 0)) <= width

        s = state
        if T > 1:
            # The gather attention reads every column it is given: the loop runs in segments
            # over growing table widths, each ending when a slot outgrows its width.
            for width in widths:
                if rows:
                    positions = (width - plan.prompt_pages) * size
                    s["pools"] = tuple((pool, slot_cache.grow_slot_rows(*own, positions))
                                       for pool, own in s["pools"])
                s = jax.lax.while_loop(
                    lambda s, w=width: group_any(running(s)) & group_all(fits(s, w)),
                    functools.partial(step, width=width), s)
        mask_BxT = jnp.arange(T)[None, :] < s["lengths_B"][:, None]
        # A preempted sample's abandoned tail is padding again.
        tokens_BxT = jnp.where(mask_BxT, s["tokens_BxT"], pad_id)
        logprobs_BxT = jnp.where(mask_BxT, s["logprobs_BxT"], 0.0)
        out = (tokens_BxT, s["lengths_B"], mask_BxT, logprobs_BxT, s["stopped_B"])
        if record_experts:
            out += (prompt_experts_PxLpxYxA, s["experts_BxTxYxA"])
        return out + (1 + s["step"], batch + s["step"] * slots, s["peak_pages"],
                      s["preemptions"])

    def run_single(params, prompt_PxLp, mask_PxLp, budgets_B, rng):
        u_TxB = step_uniforms(rng, sampling, T, prompt_PxLp.shape[0] * group_size)
        return run(params, prompt_PxLp, mask_PxLp, u_TxB, budgets_B)

    def run_sharded(params, prompt_PxLp, mask_PxLp, budgets_B, rng):
        """Each batch shard schedules its own slots over its own pool; with an ``expert`` axis
        each device holds only its own experts' weights (``shards.expert_param_specs``)."""
        u_TxB = step_uniforms(rng, sampling, T, prompt_PxLp.shape[0] * group_size)
        rows_out = 7 if record_experts else 5
        param_specs = expert_param_specs(cfg, sharding, params)
        inner = None
        if param_specs is not None:
            inner = sharding.inside_shard_map(row_axes(sharding, prompt_PxLp.shape[0]))
        out = on_each_shard(functools.partial(run, inner=inner), sharding, params, prompt_PxLp,
                            mask_PxLp, budgets_B, u_TxB, max_new_tokens=T, row_outputs=rows_out,
                            scalar_outputs=4, param_specs=param_specs)
        steps, slot_steps, peak, preemptions = out[rows_out:]
        return out[:rows_out] + (jnp.max(steps), jnp.sum(slot_steps), jnp.sum(peak),
                                 jnp.sum(preemptions))

    return jax.jit(run_single if sharding is None else run_sharded)


# Callers build the plan with ``paged.plan`` (it has a module of its own).
plan, default_slots = paged_plan.plan, paged_plan.default_slots
