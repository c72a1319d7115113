"""Pallas kernels (TPU and GPU) with XLA fallbacks and references for the GRPO hot spots.

  token_logprobs      per-token log-probs (and entropy) under an LM head, never holding N x V
  grouped_advantages  group-relative advantages (GRPO, Dr. GRPO, RLOO) with zero-std reporting

This package imports jax only; it knows nothing of r1jax.
"""
from kernels.block_sizes import AdvantageBlockSizes, LogprobBlockSizes
from kernels.advantages import GroupedAdvantages, grouped_advantages
from kernels.logprobs import resolve_impl as resolve_logprob_impl
from kernels.logprobs import token_logprobs

__all__ = [
    "AdvantageBlockSizes",
    "GroupedAdvantages",
    "LogprobBlockSizes",
    "grouped_advantages",
    "resolve_logprob_impl",
    "token_logprobs",
]
