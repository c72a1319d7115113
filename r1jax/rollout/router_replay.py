"""Recording a mixture of experts' routing during a rollout, for router replay in training.

The sampler and the trainer compute the same routing with different programs (a cached one-token
step, or a paged one, against a full teacher-forced forward), so a near-tie between two experts
can go either way, and a token routed to other experts in training than in sampling is scored by
a different function than the one that sampled it (the train/inference mismatch of MoE RL).
Router replay records the sampler's choice and has every training forward of the batch take it
(``models.forward(expert_indices=...)``, ``r1jax.rl.logprobs``).

What a rollout records (``generate(record_experts=True)``), in ``moe.expert_index_dtype`` (uint8
up to 256 experts): ``prompt_experts [P, Lp, Y, A]``, each prompt token's choice in each of the
``Y`` MoE layers (from the prefill; one per prompt, its G samples share it), and
``experts [P·G, T, Y, A]``, each generated token's (from the decode step that fed it back). A
row's last token is never fed back, so its entry, like those of padding, holds nothing: the
trainer routes those tokens afresh (``r1jax.rl.logprobs.replayed_experts``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax.models import ModelConfig
from r1jax.models.moe import expert_index_dtype


def _check(cfg: ModelConfig) -> None:
    if not cfg.is_moe:
        raise ValueError(f"recording expert choices (router replay) needs a mixture-of-experts "
                         f"model; {cfg.model_type} is dense: turn grpo.router_replay off")


def tokens_first(cfg: ModelConfig, expert_indices_YxBxLxA):
    """A forward's ``moe_stats.expert_indices`` as ``[B, L, Y, A]`` in the record's dtype (rows
    first: batches are sliced and sharded by rows)."""
    _check(cfg)
    dtype = expert_index_dtype(cfg.n_routed_experts)
    return jnp.transpose(expert_indices_YxBxLxA, (1, 2, 0, 3)).astype(dtype)


def empty_record(cfg: ModelConfig, rows: int, length: int):
    """The ``[rows, length, Y, A]`` buffer a decode loop writes generated tokens' choices to."""
    _check(cfg)
    shape = (rows, length, cfg.num_moe_layers, cfg.num_experts_per_tok)
    return jnp.zeros(shape, expert_index_dtype(cfg.n_routed_experts))


def record_step(record_BxTxYxA, experts_BxYxA, t):
    """Every row's choice for its token ``t`` (lockstep: all rows feed the same position)."""
    update = experts_BxYxA[:, None].astype(record_BxTxYxA.dtype)
    return jax.lax.dynamic_update_slice(record_BxTxYxA, update, (0, t, 0, 0))


def record_slots(record_BxTxYxA, experts_SxYxA, row_S, t_S):
    """Each slot's choice for token ``t_S`` of row ``row_S`` (paged: rows ``>= B`` are dropped,
    the slots that did not advance)."""
    update = experts_SxYxA.astype(record_BxTxYxA.dtype)
    return record_BxTxYxA.at[row_S, t_S].set(update, mode="drop")
