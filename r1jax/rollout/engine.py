"""Jitted generation of G completions per prompt: one prefill per prompt, one ``while_loop`` decode.

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
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from r1jax import distributed, models
from r1jax.models import ModelConfig, decode
from r1jax.models.layers import rope_tables
from r1jax.rollout.sampling import SamplingParams, sample_with_uniform
from r1jax.rollout.stops import StopCriteria, stop_string_cut
from r1jax.sharding import Sharding, constrain

DEFAULT_PROMPT_BUCKETS = tuple(2**k for k in range(4, 18))  # 16 … 131072


@flax.struct.dataclass
class Rollout:
    """Completions, row ``p * G + g`` being sample g of prompt p.

    ``tokens`` ``[P·G, T]`` (padding after the stop), ``lengths`` ``[P·G]`` (tokens up to and
    including the stop), ``mask`` ``[P·G, T]`` (1 on those tokens), ``logprobs`` ``[P·G, T]``
    (log-prob of each sampled token under the temperature-scaled policy; 0 on padding),
    ``stopped`` ``[P·G]`` (False where the budget ran out), and the left-padded prompts
    ``prompt_tokens`` / ``prompt_mask`` ``[P, Lp]`` as they were fed to the model, and
    ``decode_steps``, how many steps the loop ran before every row had stopped.
    """

    tokens: jax.Array
    lengths: jax.Array
    mask: jax.Array
    logprobs: jax.Array
    stopped: jax.Array
    prompt_tokens: jax.Array
    prompt_mask: jax.Array
    decode_steps: jax.Array

    @property
    def group_size(self) -> int:
        return self.tokens.shape[0] // self.prompt_tokens.shape[0]


def bucket_length(length: int, buckets: Sequence[int]) -> int:
    for b in sorted(buckets):
        if b >= length:
            return b
    raise ValueError(f"a prompt of {length} tokens exceeds the largest bucket {max(buckets)}")


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
                     unstack: bool):
    """One jitted program per static setting (shapes add their own compile-cache entries).

    ``unstack``: decode with ``decode.decode_step`` on weights re-laid out once per call (CPU);
    otherwise with ``models.forward`` on the parameters as they are (accelerators).
    """

    def run(params, prompt_PxLp, prompt_mask_PxLp, u_TxB, sharding):
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

        def repeat(x):
            return jnp.repeat(x, group_size, axis=0)

        # One prefill per prompt; its cache is repeated for the prompt's G samples.
        cache = out.cache.map_layers(lambda x: constrain(repeat(x), models.CACHE_AXES, sharding))
        cache = cache.replace(valid_BxS=repeat(cache.valid_BxS))
        logits_BxV = constrain(repeat(logits_PxV), ("batch", "act_vocab"), sharding)

        def draw(step, logits_BxV):
            u_B = None if u_TxB is None else jax.lax.dynamic_index_in_dim(u_TxB, step, 0, False)
            return sample_with_uniform(u_B, logits_BxV, sampling)

        def record(s, token_B, logprob_B):
            """Write the token sampled at ``s["step"]`` (padding for rows already stopped)."""
            token_B = jnp.where(s["done_B"], pad_id, token_B)
            logprob_B = jnp.where(s["done_B"], 0.0, logprob_B)
            recent_BxM = jnp.concatenate([s["recent_BxM"][:, 1:], token_B[:, None]], axis=1)
            at = (0, s["step"])
            return dict(
                s,
                step=s["step"] + 1,
                token_B=token_B,
                tokens_BxT=jax.lax.dynamic_update_slice(s["tokens_BxT"], token_B[:, None], at),
                logprobs_BxT=jax.lax.dynamic_update_slice(s["logprobs_BxT"], logprob_B[:, None],
                                                          at),
                recent_BxM=recent_BxM,
                lengths_B=s["lengths_B"] + (~s["done_B"]).astype(jnp.int32),
                done_B=s["done_B"] | stops.hit(token_B, recent_BxM),
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
        state = record(state, *draw(0, logits_BxV))

        def step_with(logits_of):
            def decode_step(s):
                logits_BxV, caches = logits_of(s)
                return record(dict(s, **caches), *draw(s["step"], logits_BxV))
            return decode_step

        def keep_going_until(end):
            return lambda s: (s["step"] < end) & ~jnp.all(s["done_B"])

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
                    logits_BxV, keys, values = decode.decode_step(
                        cfg, weights, s["token_B"], rope, slot, valid_BxS, s["keys"], s["values"],
                        sharding)
                    return logits_BxV, dict(keys=keys, values=values)

                s = jax.lax.while_loop(keep_going_until(end), step_with(logits_of),
                                       dict(s, keys=keys, values=values))
                keys, values = s.pop("keys"), s.pop("values")
        else:
            def logits_of(s):
                out = models.forward(cfg, params, s["token_B"][:, None], cache=s["cache"],
                                     sharding=sharding)
                logits_BxV = jnp.dot(out.hidden_BxLxD[:, 0], out.lm_head_DxV,
                                     preferred_element_type=jnp.float32)
                return logits_BxV, dict(cache=out.cache)

            s = jax.lax.while_loop(keep_going_until(max_new_tokens), step_with(logits_of),
                                   dict(s, cache=cache))
        mask_BxT = jnp.arange(max_new_tokens)[None, :] < s["lengths_B"][:, None]
        return (s["tokens_BxT"], s["lengths_B"], mask_BxT, s["logprobs_BxT"], s["done_B"],
                s["step"])

    def uniforms(rng, batch):
        """Every step's uniforms in one draw (see ``sample_with_uniform``); None if greedy."""
        if sampling.greedy:
            return None
        return jax.random.uniform(rng, (max_new_tokens, batch), jnp.float32)

    def run_global(params, prompt_PxLp, prompt_mask_PxLp, rng):
        u_TxB = uniforms(rng, prompt_PxLp.shape[0] * group_size)
        if u_TxB is not None:
            u_TxB = constrain(u_TxB, (None, "batch"), sharding)
        return run(params, prompt_PxLp, prompt_mask_PxLp, u_TxB, sharding)

    def run_per_shard(params, prompt_PxLp, prompt_mask_PxLp, rng):
        """The CPU decode on a mesh: each shard of prompts runs its own loop (``shard_map``) and
        stops when its own rows have, so the loop has no cross-device step; the shards run in
        parallel (on CPU devices, one core each)."""
        rows = sharding.spec(("batch",), (prompt_PxLp.shape[0],))
        if not rows:  # the prompts do not divide over the batch axes
            return run_global(params, prompt_PxLp, prompt_mask_PxLp, rng)
        batch = prompt_PxLp.shape[0] * group_size
        u_TxB = uniforms(rng, batch)
        greedy = u_TxB is None
        if greedy:  # shard_map takes arrays only; greedy never reads it
            u_TxB = jnp.zeros((max_new_tokens, batch), jnp.float32)

        def local(params, prompt, mask, u):
            out = run(params, prompt, mask, None if greedy else u, None)
            return out[:-1] + (out[-1][None],)

        spec = jax.sharding.PartitionSpec
        out = jax.shard_map(
            local, mesh=sharding.mesh, in_specs=(spec(), rows, rows, spec(None, *rows)),
            out_specs=(rows,) * 6, check_vma=False)(params, prompt_PxLp, prompt_mask_PxLp, u_TxB)
        return out[:-1] + (jnp.max(out[-1]),)

    return jax.jit(run_per_shard if unstack and sharding is not None else run_global)


def _pad_prompts(prompts, prompt_mask, pad_id, buckets):
    """Left-pad ragged prompts (or re-bucket an already padded batch) into ``[P, Lp]``."""
    if prompt_mask is not None:
        prompts = [list(np.asarray(row)[np.asarray(m).astype(bool)])
                   for row, m in zip(np.asarray(prompts), np.asarray(prompt_mask))]
    prompts = [list(map(int, p)) for p in prompts]
    if not prompts:
        raise ValueError("generate() needs at least one prompt")
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
    length = bucket_length(max(map(len, prompts)), buckets)
    ids = np.full((len(prompts), length), pad_id, np.int32)
    mask = np.zeros((len(prompts), length), np.int32)
    for i, p in enumerate(prompts):
        ids[i, length - len(p):] = p
        mask[i, length - len(p):] = 1
    return ids, mask


def generate(
    params: Any,
    model_config: ModelConfig,
    prompt_tokens: Sequence[Sequence[int]] | np.ndarray,
    *,
    rng: jax.Array,
    max_new_tokens: int,
    group_size: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    stop_ids: Sequence[int] = (),
    stop_strings: Sequence[str] = (),
    tokenizer=None,
    prompt_mask: np.ndarray | None = None,
    pad_id: int = 0,
    max_cache_length: int | None = None,
    prompt_buckets: Sequence[int] = DEFAULT_PROMPT_BUCKETS,
    sharding: Sharding | None = None,
    unstack_params: bool | None = None,
) -> Rollout:
    """Sample ``group_size`` completions of up to ``max_new_tokens`` tokens for every prompt.

    ``prompt_tokens`` is a list of token-id lists (any lengths) or a left-padded ``[P, L]`` array
    with ``prompt_mask``. ``rng`` is required: pass a new key every step. ``stop_strings`` need the
    ``tokenizer`` (to encode them for early stopping and to cut completions on the host).
    ``max_cache_length`` (default: the model's ``max_position_embeddings``) bounds prompt + new tokens.
    ``unstack_params`` re-lays the weights out once per call for the lean CPU decode step
    (``r1jax.models.decode``: layers split, q/k/v and gate/up fused) instead of decoding with
    ``models.forward`` (default: on CPU only; it holds a second copy of the weights during the
    call). Both give the same samples up to float rounding.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    sampling = SamplingParams(float(temperature), float(top_p), int(top_k))
    if stop_strings and tokenizer is None:
        raise ValueError("stop_strings need the tokenizer (to encode and to check them)")
    stop_sequences = [tokenizer.encode(s) for s in stop_strings] if stop_strings else []
    stops = StopCriteria.build(stop_ids, stop_sequences)
    ids, mask = _pad_prompts(prompt_tokens, prompt_mask, pad_id, prompt_buckets)
    limit = max_cache_length or model_config.max_position_embeddings
    longest = int(mask.sum(axis=1).max())
    if longest + max_new_tokens > limit:
        raise ValueError(
            f"a prompt of {longest} tokens plus max_new_tokens={max_new_tokens} exceeds the cache "
            f"limit of {limit} positions; shorten the prompt or lower max_new_tokens"
        )
    ids_j, mask_j = jnp.asarray(ids), jnp.asarray(mask)
    if sharding is not None:
        ids_j = jax.device_put(ids_j, sharding.named(("batch", "length"), ids.shape))
        mask_j = jax.device_put(mask_j, sharding.named(("batch", "length"), ids.shape))
    if unstack_params is None:
        # On CPU every op of the loop is a kernel call; accelerators fuse the per-step slices.
        unstack_params = jax.default_backend() == "cpu"
    fn = compiled_rollout(model_config, sampling, stops, int(group_size), int(max_new_tokens),
                          int(pad_id), sharding, bool(unstack_params))
    tokens, lengths, comp_mask, logprobs, stopped, steps = fn(params, ids_j, mask_j, rng)
    rollout = Rollout(tokens, lengths, comp_mask, logprobs, stopped, ids_j, mask_j, steps)
    if stop_strings:
        rollout = cut_at_stop_strings(rollout, tokenizer, stop_strings, pad_id)
    return rollout


def cut_at_stop_strings(rollout: Rollout, tokenizer, stop_strings: Sequence[str], pad_id: int = 0
                        ) -> Rollout:
    """End each completion at the first token whose decoded text completes a stop string.

    Each process checks its share of the rows (``distributed.host_rows``); the cuts are gathered
    so that every process builds the same arrays, laid out like the rollout's."""
    tokens = distributed.to_host(rollout.tokens).copy()
    lengths = distributed.to_host(rollout.lengths).copy()
    stopped = distributed.to_host(rollout.stopped).copy()
    decode = lambda ids: tokenizer.decode(ids, skip_special=False)  # noqa: E731
    mine = range(tokens.shape[0])[distributed.host_rows(tokens.shape[0])]
    cuts = distributed.allgather(
        [stop_string_cut(decode, tokens[row, :lengths[row]].tolist(), stop_strings)
         for row in mine])
    for row, cut in enumerate(cuts):
        if cut is not None:
            lengths[row], stopped[row] = cut, True
            tokens[row, cut:] = pad_id
    mask = np.arange(tokens.shape[1])[None, :] < lengths[:, None]
    logprobs = np.where(mask, distributed.to_host(rollout.logprobs), 0.0).astype(np.float32)
    return dataclasses.replace(
        rollout, tokens=distributed.like_rows(tokens, rollout.tokens),
        lengths=distributed.like_rows(lengths, rollout.lengths),
        mask=distributed.like_rows(mask, rollout.mask),
        logprobs=distributed.like_rows(logprobs, rollout.logprobs),
        stopped=distributed.like_rows(stopped, rollout.stopped))
