"""Supervised fine-tuning: sequence packing and the pure, sharded ``sft_step``.

* ``pack_examples([(prompt_ids, response_ids), …], seq_len)`` — first-fit packing into rows with
  segment ids, per-segment positions and a loss mask on response tokens (or every token).
* ``sft_step`` / ``make_sft_step`` — weighted next-token cross-entropy via
  ``kernels.token_logprobs`` (no ``[tokens × vocab]`` logits), microbatches, non-finite guard.
"""
from r1jax.sft.config import PAPER_OPTIM, SFTConfig
from r1jax.sft.packing import (PackedRows, empty_rows, iterate_batches, pack_examples,
                               per_example_losses)
from r1jax.sft.step import (SFTBatch, eval_loss, make_sft_step, sft_step, token_logprobs,
                            weighted_logprob_sum)

__all__ = [
    "PAPER_OPTIM", "PackedRows", "SFTBatch", "SFTConfig", "empty_rows", "eval_loss",
    "iterate_batches", "make_sft_step", "pack_examples", "per_example_losses", "sft_step",
    "token_logprobs", "weighted_logprob_sum",
]
