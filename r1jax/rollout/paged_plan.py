"""The static plan of a paged rollout (``r1jax.rollout.paged``): slots, page size, pool size and
page-table widths, per batch shard, and the layout the pool takes. It is part of the compiled
program's identity, so it is decided once per call from the shapes and the settings."""
from __future__ import annotations

import dataclasses

import jax

from kernels.paged_attention import resolve_impl


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclasses.dataclass(frozen=True)
class PagedPlan:
    """The static shape of one paged rollout (per batch shard): part of the program's identity."""

    decode_slots: int
    page_size: int
    kv_pages: int
    prefill_chunk: int
    prompt_pages: int  # page-table entries for a prompt (its bucketed length, in pages)
    generated_pages: int  # page-table entries for the tokens a sample feeds back
    # Every slot's worst case is reserved and attention is a gather: generated tokens in slot
    # rows (``slot_cache``), the pool holding the prompts' pages only.
    slot_rows: bool = False

    @property
    def table_width(self) -> int:
        return self.prompt_pages + self.generated_pages


def default_slots(samples: int) -> int:
    """Decode slots for ``samples`` samples: a sixteenth of them on a CPU, a quarter elsewhere
    (at least 8). A CPU step costs in proportion to its slots, and fewer slots keep busy to the
    end of a long tail (256 log-normal samples: 16 slots 1.2x faster than 32, 3x faster than 64);
    an accelerator's step costs about the same for more rows."""
    return max(8, ceil_div(samples, 16 if jax.default_backend() == "cpu" else 4))


def plan(num_prompts: int, prompt_len: int, group_size: int, max_new_tokens: int, *,
         decode_slots: int = 0, page_size: int = 16, kv_pages: int = 0, prefill_chunk: int = 512,
         shards: int = 1, prompt_lengths=None, attention: str = "auto") -> PagedPlan:
    """The plan for ``num_prompts`` prompts bucketed to ``prompt_len`` tokens, per batch shard.

    ``decode_slots`` (0: ``default_slots``) and ``kv_pages`` (0: every slot's
    worst case for prompts of the full bucket, so that no sample ever waits for a page) count
    over all shards; each shard gets an equal part. Where attention is a gather (CPU, GPU), a
    pool that holds every slot's worst case becomes the prompts' pages plus a row per slot
    (``slot_rows``; ``kv_pages`` then counts both, and no more than that worst case). A smaller
    ``kv_pages`` overcommits the pool: samples then wait or are preempted when it runs dry.
    ``attention`` is the attention the program will run (``kernels.paged_attention``'s impl;
    "auto": this backend's, so plan a TPU program on the TPU or under ``aot.traced_for``). It must hold each shard's prompts (their
    real ``prompt_lengths`` when given, else the bucket) and one full-length sample.
    """
    if page_size < 1 or prefill_chunk < 1:
        raise ValueError(f"page_size and prefill_chunk must be >= 1, got {page_size}, "
                         f"{prefill_chunk}")
    if num_prompts % shards:
        raise ValueError(f"{num_prompts} prompts do not split over {shards} batch shards")
    samples = num_prompts * group_size // shards
    slots = decode_slots or default_slots(num_prompts * group_size)
    if slots % shards:
        raise ValueError(f"decode_slots={slots} does not split over {shards} batch shards")
    slots = min(slots // shards, samples)
    prompt_pages = ceil_div(prompt_len, page_size)
    # The last sampled token is never fed back: a sample feeds at most T - 1 tokens.
    generated_pages = ceil_div(max(max_new_tokens - 1, 1), page_size)
    need = num_prompts // shards * prompt_pages
    pages = kv_pages // shards if kv_pages else need + slots * generated_pages
    if prompt_lengths is not None:
        pages_P = [ceil_div(int(n), page_size) for n in prompt_lengths]
        per_shard = num_prompts // shards
        need = max(sum(pages_P[i:i + per_shard]) for i in range(0, num_prompts, per_shard))
    reserved = num_prompts // shards * prompt_pages + slots * generated_pages
    slot_rows = pages >= reserved and resolve_impl(attention) == "xla"
    if slot_rows:
        pages = reserved
    if pages < need + generated_pages:
        raise ValueError(
            f"kv_pages={kv_pages} is too small: each of {shards} batch shard(s) needs "
            f"{need} pages for its prompts plus {generated_pages} for one sample of "
            f"max_new_tokens={max_new_tokens} (page_size={page_size}); at least "
            f"{(need + generated_pages) * shards} in all")
    return PagedPlan(slots, page_size, pages, min(prefill_chunk, prompt_len), prompt_pages,
                     generated_pages, slot_rows)
