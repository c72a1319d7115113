"""The lockstep engine: one prefill per prompt, one ``while_loop`` decode of every row together.

Each prompt is prefilled once and its KV cache repeated for its G samples; the first token is
sampled from the prefill's logits. The decode loop is a ``lax.while_loop`` (each step: feed the
last token, sample the next) that ends as soon as every row has stopped or the token budget is
spent, so the last sampled token is never fed back; tokens after a row's stop are padding and
masked. Every step's uniforms are drawn once before the loop. Prompt lengths are bucketed so that a
training run compiles a handful of programs, not one per batch. With a ``Sharding``, sequences are
split over the mesh's batch axes and the parameters are used where the trainer placed them; on CPU
each shard of prompts decodes in a loop of its own (``shard_map``) that stops when its rows have,
so the shards never synchronize per step and CPU devices decode in parallel (the Tunix rollout
work over two CPU devices: 7.8 ms instead of 10.3 ms on one).

On CPU the loop runs the model's one-token ``r1jax.models.decode.decode_step`` (weights re-laid
out once per call) in a few segments whose caches grow to just the slots each segment needs
(``decode_segments``); elsewhere it runs ``models.forward`` with the full-length cache.

With ``record_experts`` (router replay, mixtures of experts) the program also returns the experts
every MoE layer chose: for each prompt token from the prefill, and for each generated token from
the step that fed it back (``router_replay.record_step``); without it the loop carries nothing
more.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from r1jax import models
from r1jax.models import ModelConfig, decode
from r1jax.models.layers import rope_tables
from r1jax.rollout import router_replay
from r1jax.rollout.sampling import SamplingParams, sample_with_uniform
from r1jax.rollout.shards import on_each_shard, step_uniforms
from r1jax.rollout.stops import StopCriteria
from r1jax.sharding import Sharding, constrain


def decode_segments(max_new_tokens: int, min_steps: int = 32, max_segments: int = 4):
    """Where the CPU decode loop's segments end (exclusive step numbers; step 0 is sampled from
    the prefill): about equal segments of at least ``min_steps`` steps, at most ``max_segments``
    (each is a loop of its own in the compiled program)."""
    steps = max_new_tokens - 1
    count = max(1, min(max_segments, steps // min_steps))
    return [1 + -(-steps * k // count) for k in range(1, count + 1)] if steps else []


@functools.lru_cache(maxsize=64)
def compiled_rollout(cfg: ModelConfig, sampling: SamplingParams, stops: StopCriteria,
                     group_size: int, max_new_tokens: int, pad_id: int, sharding: Sharding | None,
                     unstack: bool, record_experts: bool = False):
    """One jitted program per static setting (shapes add their own compile-cache entries).

    ``unstack``: decode with ``decode.decode_step`` on weights re-laid out once per call (CPU);
    otherwise with ``models.forward`` on the parameters as they are (accelerators). The program
    returns ``(tokens, lengths, mask, logprobs, stopped, decode_steps)``; with ``record_experts``
    the prompts' and the completions' expert choices (``router_replay``) follow ``stopped``.
    """

    def run(params, prompt_PxLp, prompt_mask_PxLp, u_TxB, budgets_B, sharding):
        """The rollout of these prompts, given every step's uniforms (None if greedy)."""
        num_prompts, prompt_len = prompt_PxLp.shape
        batch = num_prompts * group_size
        # The last sampled token is never fed back, so T - 1 slots follow the prompt (the CPU
        # decode grows its cache segment by segment).
        slots = prompt_len + (0 if unstack else max_new_tokens - 1)
        cache = models.init_cache(cfg, num_prompts, slots)
        out = models.forward(cfg, params, prompt_PxLp, attention_mask_BxL=prompt_mask_PxLp,
                             cache=cache, sharding=sharding)
        # Left padding puts every prompt's last token in the last column.
        logits_PxV = jnp.dot(out.hidden_BxLxD[:, -1], out.lm_head_DxV,
                             preferred_element_type=jnp.float32)
        if record_experts:
            prompt_experts_PxLpxYxA = router_replay.tokens_first(cfg, out.moe_stats.expert_indices)

        def repeat(x):
            return jnp.repeat(x, group_size, axis=0)

        # One prefill per prompt; its cache is repeated for the prompt's G samples.
        axes = models.cache_axes(cfg)  # keys/values, or an MLA model's latents/rope keys
        cache = out.cache.map_layers(lambda x: constrain(repeat(x), axes, sharding))
        cache = cache.replace(valid_BxS=repeat(cache.valid_BxS))
        logits_BxV = constrain(repeat(logits_PxV), ("batch", "act_vocab"), sharding)

        def draw(step, logits_BxV):
            u_B = None if u_TxB is None else jax.lax.dynamic_index_in_dim(u_TxB, step, 0, False)
            return sample_with_uniform(u_B, logits_BxV, sampling)

        def record(s, token_B, logprob_B):
            """Write the token sampled at ``s["step"]`` (padding for rows already stopped)."""
            over_B = s["done_B"] | (s["lengths_B"] >= budgets_B)  # stopped, or out of budget
            token_B = jnp.where(over_B, pad_id, token_B)
            logprob_B = jnp.where(over_B, 0.0, logprob_B)
            recent_BxM = jnp.concatenate([s["recent_BxM"][:, 1:], token_B[:, None]], axis=1)
            lengths_B = s["lengths_B"] + (~over_B).astype(jnp.int32)
            at = (0, s["step"])
            return dict(
                s,
                step=s["step"] + 1,
                token_B=token_B,
                tokens_BxT=jax.lax.dynamic_update_slice(s["tokens_BxT"], token_B[:, None], at),
                logprobs_BxT=jax.lax.dynamic_update_slice(s["logprobs_BxT"], logprob_B[:, None],
                                                          at),
                recent_BxM=recent_BxM,
                lengths_B=lengths_B,
                done_B=s["done_B"] | (~over_B & stops.hit(token_B, recent_BxM)),
            )

        state = dict(
            step=jnp.zeros((), jnp.int32),
            token_B=jnp.zeros((batch,), jnp.int32),
            tokens_BxT=jnp.full((batch, max_new_tokens), pad_id, jnp.int32),
            logprobs_BxT=jnp.zeros((batch, max_new_tokens), jnp.float32),
            recent_BxM=jnp.full((batch, stops.window), -1, jnp.int32),
            done_B=jnp.zeros((batch,), bool),
            lengths_B=jnp.zeros((batch,), jnp.int32),
        )
        if record_experts:
            state["experts_BxTxYxA"] = router_replay.empty_record(cfg, batch, max_new_tokens)
        state = record(state, *draw(0, logits_BxV))

        def step_with(logits_of):
            def decode_step(s):
                logits_BxV, caches, experts_BxYxA = logits_of(s)
                s = dict(s, **caches)
                if record_experts:  # step s fed every row's token s - 1
                    s["experts_BxTxYxA"] = router_replay.record_step(
                        s["experts_BxTxYxA"], experts_BxYxA, s["step"] - 1)
                return record(s, *draw(s["step"], logits_BxV))
            return decode_step

        def keep_going_until(end):
            return lambda s: (s["step"] < end) & ~jnp.all(s["done_B"] |
                                                          (s["lengths_B"] >= budgets_B))

        s = state
        if unstack:
            weights = decode.prepare_weights(cfg, params)
            prompt_valid_BxLp = cache.valid_BxS
            positions_B = jnp.sum(prompt_valid_BxLp, axis=1, dtype=jnp.int32)
            keys, values = decode.to_decode_cache(cache, sharding)
            # Every step's cos/sin in one table before the loop (see ``rope_tables``).
            step_T = jnp.arange(max_new_tokens, dtype=jnp.int32)
            rope_all = rope_tables(cfg, positions_B[None, :] + step_T[:, None] - 1,
                                   max_position=prompt_len + max_new_tokens)
            # The loop runs in segments, each over a cache just long enough for its last step,
            # so that attention does not read the still-empty slots of the full-length cache.
            for end in decode_segments(max_new_tokens):
                window = prompt_len + end - 1
                keys, values = decode.grow_cache(keys, values, window, sharding)
                # A row may attend to its prompt's real tokens, then every generated slot up
                # to the one being written.
                prompt_valid_BxS = jnp.pad(prompt_valid_BxLp, ((0, 0), (0, window - prompt_len)))
                slot_S = jnp.arange(window)

                def logits_of(s, prompt_valid_BxS=prompt_valid_BxS, slot_S=slot_S):
                    slot = prompt_len + s["step"] - 1
                    valid_BxS = prompt_valid_BxS | ((slot_S >= prompt_len) & (slot_S <= slot))
                    rope = tuple(jax.lax.dynamic_index_in_dim(t, s["step"], 0, False)
                                 for t in rope_all)
                    logits_BxV, keys, values, experts_BxYxA = decode.decode_step(
                        cfg, weights, s["token_B"], rope, slot, valid_BxS, s["keys"], s["values"],
                        sharding, with_experts=True)
                    return logits_BxV, dict(keys=keys, values=values), experts_BxYxA

                s = jax.lax.while_loop(keep_going_until(end), step_with(logits_of),
                                       dict(s, keys=keys, values=values))
                keys, values = s.pop("keys"), s.pop("values")
        else:
            def logits_of(s):
                out = models.forward(cfg, params, s["token_B"][:, None], cache=s["cache"],
                                     sharding=sharding)
                logits_BxV = jnp.dot(out.hidden_BxLxD[:, 0], out.lm_head_DxV,
                                     preferred_element_type=jnp.float32)
                experts_BxYxA = None
                if out.moe_stats is not None:
                    experts_BxYxA = router_replay.tokens_first(cfg, out.moe_stats.expert_indices
                                                               )[:, 0]
                return logits_BxV, dict(cache=out.cache), experts_BxYxA

            s = jax.lax.while_loop(keep_going_until(max_new_tokens), step_with(logits_of),
                                   dict(s, cache=cache))
        mask_BxT = jnp.arange(max_new_tokens)[None, :] < s["lengths_B"][:, None]
        rows = (s["tokens_BxT"], s["lengths_B"], mask_BxT, s["logprobs_BxT"], s["done_B"])
        if record_experts:
            rows += (prompt_experts_PxLpxYxA, s["experts_BxTxYxA"])
        return rows + (s["step"],)

    def run_global(params, prompt_PxLp, prompt_mask_PxLp, budgets_B, rng):
        u_TxB = step_uniforms(rng, sampling, max_new_tokens, prompt_PxLp.shape[0] * group_size)
        if u_TxB is not None:
            u_TxB = constrain(u_TxB, (None, "batch"), sharding)
        return run(params, prompt_PxLp, prompt_mask_PxLp, u_TxB, budgets_B, sharding)

    def run_per_shard(params, prompt_PxLp, prompt_mask_PxLp, budgets_B, rng):
        """The CPU decode on a mesh: each shard of prompts runs its own loop and stops when its
        own rows have; the shards run in parallel (on CPU devices, one core each)."""
        if not sharding.spec(("batch",), (prompt_PxLp.shape[0],)):
            return run_global(params, prompt_PxLp, prompt_mask_PxLp, budgets_B, rng)
        u_TxB = step_uniforms(rng, sampling, max_new_tokens, prompt_PxLp.shape[0] * group_size)
        out = on_each_shard(lambda *a: run(*a, None), sharding, params, prompt_PxLp,
                            prompt_mask_PxLp, budgets_B, u_TxB, max_new_tokens=max_new_tokens,
                            row_outputs=7 if record_experts else 5, scalar_outputs=1)
        return out[:-1] + (jnp.max(out[-1]),)

    return jax.jit(run_per_shard if unstack and sharding is not None else run_global)
