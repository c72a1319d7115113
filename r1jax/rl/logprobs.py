"""Per-token log-probs of completions, computed blockwise from hidden states and the LM head.

One forward over ``prompt + completion[:-1]``; only the hidden states that predict completion
tokens go to ``kernels.token_logprobs``, which never materializes ``[tokens × vocab]`` logits.
Given the sampler's expert choices (router replay), the forward takes them (``replayed_experts``).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

import kernels
from r1jax import models
from r1jax.models.moe import expert_index_dtype
from r1jax.sharding import Sharding, constrain

_PALLAS = ("pallas_tpu", "pallas_gpu")


def sharded_token_logprobs(hidden_NxD, lm_head_DxV, targets_N, *, temperature, return_entropy,
                           impl, sharding: Sharding | None):
    """``kernels.token_logprobs`` over flat tokens, placed on ``sharding``'s mesh: the one wrapper
    that every caller (GRPO and SFT log-probs) goes through. Returns ``(logp_N, entropy_N or
    None)``."""
    # "auto" resolved first: on a TPU mesh it is the Pallas kernel, which needs the wrapper below.
    impl = kernels.resolve_logprob_impl(impl)
    call = functools.partial(kernels.token_logprobs, temperature=temperature,
                             return_entropy=return_entropy, impl=impl)
    if sharding is None or impl not in _PALLAS:
        return call(hidden_NxD, lm_head_DxV, targets_N)
    # A Pallas kernel sees one device's block: split tokens over every mesh axis, give each device
    # the whole head (a vocab-sharded head would need a cross-device log-sum-exp).
    axes = tuple(sharding.mesh.axis_names)
    tokens = PartitionSpec(axes)
    out_specs = (tokens, tokens if return_entropy else PartitionSpec())

    def local(h, w, t):
        logp, ent = call(h, w, t)
        return logp, (ent if return_entropy else jnp.zeros((), jnp.float32))

    logp, ent = jax.shard_map(local, mesh=sharding.mesh, in_specs=(tokens, PartitionSpec(), tokens),
                              out_specs=out_specs, check_vma=False)(hidden_NxD, lm_head_DxV,
                                                                    targets_N)
    return logp, (ent if return_entropy else None)


def completion_logprobs(model_cfg: models.ModelConfig, params, tokens_BxL, attention_mask_BxL,
                        completion_length: int, *, temperature: float = 1.0,
                        return_entropy: bool = False, impl: str = "auto",
                        sharding: Sharding | None = None, experts_BxLxYxA=None):
    """``log π(completion_t | prompt, completion_<t)`` for the last ``completion_length`` columns.

    ``tokens_BxL`` is the left-padded prompt followed by the completion (padding after a stop is
    masked by ``attention_mask_BxL``; its log-probs are computed but meaningless). Returns
    ``(logp_BxT, entropy_BxT or None)`` in float32, with ``T = completion_length``.
    ``experts_BxLxYxA``: the sampler's expert choices for ``tokens_BxL``, replayed.
    """
    return completion_forward(model_cfg, params, tokens_BxL, attention_mask_BxL,
                              completion_length, temperature=temperature,
                              return_entropy=return_entropy, impl=impl, sharding=sharding,
                              experts_BxLxYxA=experts_BxLxYxA)[:2]


def replayed_experts(experts_BxLxYxA, attention_mask_BxL, completion_length: int,
                     num_experts: int):
    """The ``expert_indices`` ``[Y, B, L - 1, A]`` that replay a rollout's routing in the forward
    over ``tokens[:, :-1]``: the recorded choice of every token the sampler routed, and
    ``num_experts`` — route afresh (``moe.route``) — for every other.

    The sampler routed each real prompt token (in the prefill) and each completion token it fed
    back to sample the next one: all but a row's last, which is real but never went through the
    model (its output predicts nothing the loss reads; its fresh choice only enters the balance
    statistics). Padding was never routed either.
    """
    length = attention_mask_BxL.shape[1]
    mask_BxL = attention_mask_BxL.astype(bool)
    in_prompt_L = jnp.arange(length - 1) < length - completion_length
    # A completion token was fed back exactly when the row has a token after it.
    routed_BxL = mask_BxL[:, :-1] & (in_prompt_L[None, :] | mask_BxL[:, 1:])
    # One more value than there are experts: the record's own dtype may have no room for it.
    dtype = expert_index_dtype(num_experts + 1)
    replay_BxLxYxA = jnp.where(routed_BxL[:, :, None, None],
                               experts_BxLxYxA[:, :-1].astype(dtype), num_experts)
    return jnp.transpose(replay_BxLxYxA, (2, 0, 1, 3))


def completion_forward(model_cfg: models.ModelConfig, params, tokens_BxL, attention_mask_BxL,
                       completion_length: int, *, temperature: float = 1.0,
                       return_entropy: bool = False, impl: str = "auto",
                       sharding: Sharding | None = None, experts_BxLxYxA=None):
    """``completion_logprobs`` plus the forward's ``MoEStats`` (stacked over the MoE layers;
    None for a dense model): ``(logp_BxT, entropy_BxT or None, moe_stats or None)``. The
    statistics cover every real token the forward saw, prompt and completion; with
    ``experts_BxLxYxA`` (router replay) they are those of the replayed routing."""
    batch, length = tokens_BxL.shape
    replay = None
    if experts_BxLxYxA is not None:
        replay = replayed_experts(experts_BxLxYxA, attention_mask_BxL, completion_length,
                                  model_cfg.n_routed_experts)
    out = models.forward(model_cfg, params, tokens_BxL[:, :-1],
                         attention_mask_BxL=attention_mask_BxL[:, :-1], sharding=sharding,
                         expert_indices=replay)
    hidden_BxTxD = out.hidden_BxLxD[:, length - 1 - completion_length:]
    hidden_BxTxD = constrain(hidden_BxTxD, ("batch", "length", "act_embed"), sharding)
    targets_BxT = tokens_BxL[:, length - completion_length:]
    logp_N, entropy_N = sharded_token_logprobs(
        hidden_BxTxD.reshape(batch * completion_length, -1), out.lm_head_DxV,
        targets_BxT.reshape(-1), temperature=temperature, return_entropy=return_entropy,
        impl=impl, sharding=sharding)
    shape = (batch, completion_length)
    return (logp_N.reshape(shape), None if entropy_N is None else entropy_N.reshape(shape),
            out.moe_stats)
