"""The rollout entry point: G completions per prompt from one of two engines.

``generate`` left-pads and buckets the prompts (so that a training run compiles a handful of
programs, not one per batch), places them on the mesh, and runs either engine:

* ``lockstep`` (``r1jax.rollout.lockstep``): one prefill per prompt, then every row decodes in one
  batch over a dense cache until the last row stops — the fastest for short, fixed budgets;
* ``paged`` (``r1jax.rollout.paged``): continuous batching over a paged KV cache, for long and
  long-tailed responses.

Both draw sample b's token t from the same uniform, so they give the same tokens for the same key
(up to the float rounding of the logits). Stop strings are then cut on the host.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from r1jax import distributed
from r1jax.models import ModelConfig
from r1jax.rollout import paged
from r1jax.rollout.lockstep import compiled_rollout
from r1jax.rollout.sampling import SamplingParams
from r1jax.rollout.stops import StopCriteria, stop_string_cut
from r1jax.sharding import Sharding

DEFAULT_PROMPT_BUCKETS = tuple(2**k for k in range(4, 18))  # 16 … 131072


@flax.struct.dataclass
class Rollout:
    """Completions, row ``p * G + g`` being sample g of prompt p.

    ``tokens`` ``[P·G, T]`` (padding after the stop), ``lengths`` ``[P·G]`` (tokens up to and
    including the stop), ``mask`` ``[P·G, T]`` (1 on those tokens), ``logprobs`` ``[P·G, T]``
    (log-prob of each sampled token under the temperature-scaled policy; 0 on padding),
    ``stopped`` ``[P·G]`` (False where the budget ran out), and the left-padded prompts
    ``prompt_tokens`` / ``prompt_mask`` ``[P, Lp]`` as they were fed to the model, and
    ``decode_steps``, how many steps the loop ran before every row had stopped. The engine's work
    and memory: ``slot_steps``, the token positions it sampled (useful or padding: rows × steps
    for lockstep, slots × steps for paged), ``kv_tokens``, the KV cache it held (token slots per
    layer), ``kv_tokens_peak``, how many of them were in use at most, and ``preemptions``, how
    often the paged engine's pool ran dry and a sample was restarted.

    With ``generate(record_experts=True)`` (router replay, a mixture of experts; else None):
    ``prompt_experts`` ``[P, Lp, Y, A]``, the experts each of the ``Y`` MoE layers chose for
    each prompt token, and ``experts`` ``[P·G, T, Y, A]``, for each generated token; entries of
    padding and of each row's last token (never fed back) hold nothing (``router_replay``).
    """

    tokens: jax.Array
    lengths: jax.Array
    mask: jax.Array
    logprobs: jax.Array
    stopped: jax.Array
    prompt_tokens: jax.Array
    prompt_mask: jax.Array
    decode_steps: jax.Array
    slot_steps: jax.Array | int = 0
    kv_tokens: int = 0
    kv_tokens_peak: jax.Array | int = 0
    preemptions: jax.Array | int = 0
    prompt_experts: jax.Array | None = None
    experts: jax.Array | None = None

    @property
    def group_size(self) -> int:
        return self.tokens.shape[0] // self.prompt_tokens.shape[0]


def bucket_length(length: int, buckets: Sequence[int]) -> int:
    for b in sorted(buckets):
        if b >= length:
            return b
    raise ValueError(f"a prompt of {length} tokens exceeds the largest bucket {max(buckets)}")


def batch_shards(sharding: Sharding | None, num_prompts: int) -> int:
    """Over how many shards ``num_prompts`` prompts split on the mesh's batch axes."""
    if sharding is None:
        return 1
    rows = sharding.spec(("batch",), (num_prompts,))
    axes = rows[0] if rows else ()
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    return int(np.prod([sharding.mesh.shape[a] for a in axes]))


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
    engine: str = "lockstep",
    decode_slots: int = 0,
    page_size: int = 16,
    kv_pages: int = 0,
    prefill_chunk: int = 512,
    sample_budgets: Sequence[int] | np.ndarray | None = None,
    record_experts: bool = False,
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

    ``engine``: ``"lockstep"`` decodes every row in one batch until the last one stops, over a
    dense cache; ``"paged"`` (``r1jax.rollout.paged``) decodes ``decode_slots`` rows at a time
    over a pool of ``kv_pages`` pages of ``page_size`` tokens, a waiting sample taking the slot of
    one that stopped (0: the defaults of ``paged.plan``). Both give the same tokens for the same
    key up to float rounding; a DeepSeek model (MLA) pages its latent cache. ``sample_budgets``
    caps each row's new tokens (``[P·G]``, each ``1 … max_new_tokens``). ``record_experts`` (a
    mixture of experts) also returns every token's expert choices (``Rollout.prompt_experts``/
    ``experts``), for router replay in training.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if record_experts and not model_config.is_moe:
        raise ValueError(f"record_experts needs a mixture-of-experts model; "
                         f"{model_config.model_type} is dense (set grpo.router_replay=False)")
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
    batch = ids.shape[0] * group_size
    budgets = np.full((batch,), max_new_tokens, np.int32)
    if sample_budgets is not None:
        budgets = np.asarray(sample_budgets, np.int32).reshape(-1)
        if budgets.shape != (batch,) or budgets.min() < 1 or budgets.max() > max_new_tokens:
            raise ValueError(f"sample_budgets must be {batch} integers in 1 … max_new_tokens="
                             f"{max_new_tokens} (one per sample), got shape {budgets.shape}, "
                             f"range {budgets.min()} … {budgets.max()}")
    ids_j, mask_j, budgets_j = jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(budgets)
    if sharding is not None:
        ids_j = jax.device_put(ids_j, sharding.named(("batch", "length"), ids.shape))
        mask_j = jax.device_put(mask_j, sharding.named(("batch", "length"), ids.shape))
        budgets_j = jax.device_put(budgets_j, sharding.named(("batch",), budgets.shape))
    if engine == "paged":
        shards = batch_shards(sharding, ids.shape[0])
        pool = paged.plan(ids.shape[0], ids.shape[1], group_size, max_new_tokens,
                          decode_slots=decode_slots, page_size=page_size, kv_pages=kv_pages,
                          prefill_chunk=prefill_chunk, shards=shards,
                          prompt_lengths=mask.sum(axis=1))
        fn = paged.compiled_paged(model_config, sampling, stops, int(group_size),
                                  int(max_new_tokens), int(pad_id), pool,
                                  sharding if shards > 1 else None,
                                  record_experts=bool(record_experts))
        rows, experts = _split_experts(fn(params, ids_j, mask_j, budgets_j, rng), record_experts)
        tokens, lengths, comp_mask, logprobs, stopped, steps, slot_steps, peak, preemptions = rows
        rollout = Rollout(tokens, lengths, comp_mask, logprobs, stopped, ids_j, mask_j, steps,
                          slot_steps, pool.kv_pages * pool.page_size * shards,
                          peak * pool.page_size, preemptions, *experts)
        if stop_strings:
            rollout = cut_at_stop_strings(rollout, tokenizer, stop_strings, pad_id)
        return rollout
    if engine != "lockstep":
        raise ValueError(f"engine must be 'lockstep' or 'paged', got {engine!r}")
    if unstack_params is None:
        # On CPU every op of the loop is a kernel call; accelerators fuse the per-step slices.
        unstack_params = jax.default_backend() == "cpu"
    fn = compiled_rollout(model_config, sampling, stops, int(group_size), int(max_new_tokens),
                          int(pad_id), sharding, bool(unstack_params), bool(record_experts))
    rows, experts = _split_experts(fn(params, ids_j, mask_j, budgets_j, rng), record_experts)
    tokens, lengths, comp_mask, logprobs, stopped, steps = rows
    kv_tokens = batch * (ids.shape[1] + max_new_tokens - 1)
    rollout = Rollout(tokens, lengths, comp_mask, logprobs, stopped, ids_j, mask_j, steps,
                      steps * batch, kv_tokens, kv_tokens, 0, *experts)
    if stop_strings:
        rollout = cut_at_stop_strings(rollout, tokenizer, stop_strings, pad_id)
    return rollout


def _split_experts(outputs: tuple, recorded: bool) -> tuple[tuple, tuple]:
    """An engine's outputs without, and its ``(prompt_experts, experts)`` (which follow the five
    per-row outputs when recorded; else None, None)."""
    if not recorded:
        return outputs, (None, None)
    return outputs[:5] + outputs[7:], outputs[5:7]


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
