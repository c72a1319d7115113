"""Pallas kernels (TPU and GPU) with XLA fallbacks and references for the GRPO hot spots.

  token_logprobs      per-token log-probs (and entropy) under an LM head, never holding N x V
  grouped_advantages  group-relative advantages (GRPO, Dr. GRPO, RLOO) with zero-std reporting
  paged_attention     ragged paged decode attention over a shared KV page pool (GQA, prompt holes)

This package imports jax only; it knows nothing of r1jax.
"""
from kernels.block_sizes import AdvantageBlockSizes, LogprobBlockSizes
from kernels.advantages import GroupedAdvantages, grouped_advantages
from kernels.logprobs import resolve_impl as resolve_logprob_impl
from kernels.logprobs import token_logprobs
from kernels.paged_attention import ragged_paged_attention

__all__ = [
    "AdvantageBlockSizes",
    "GroupedAdvantages",
    "LogprobBlockSizes",
    "grouped_advantages",
    "ragged_paged_attention",
    "resolve_logprob_impl",
    "token_logprobs",
]
