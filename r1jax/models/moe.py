"""Mixture-of-experts FFN: router, dropless grouped-matmul experts, expert parallelism, statistics.

One pure function, ``moe_ffn``, is the layer: the Flax module ``MoE`` (training forward) declares
the parameters and calls it, and the one-token decode step calls it on the same parameters.

* Routing (``route``): scores ``s = softmax(x W_r)`` (Qwen3-MoE) or ``sigmoid(x W_r)``
  (DeepSeek-V3); the ``A`` experts are chosen on ``s + b`` (the score-correction bias ``b``, when
  the config has one), within the ``topk_group`` best of ``n_group`` groups; the combine weights
  are the *unbiased* scores of the chosen experts, renormalized when ``norm_topk_prob`` and times
  ``routed_scaling_factor``. Given ``expert_indices`` (router replay), the choice is taken as is
  and only the weights are computed, so gradients still reach the router; a token whose replayed
  choice holds an out-of-range expert (``>= X``: one the sampler never routed) is routed afresh.
* Experts (``expert_swiglu``): dropless. The ``N·A`` token-expert assignments are sorted by
  expert and each expert's contiguous rows go through its SwiGLU with ``jax.lax.ragged_dot``
  (grouped matmuls sized by the per-expert counts); the rows are weighted and summed back onto
  their tokens with one scatter-add. No token is dropped and no expert sees another's tokens.
* Expert parallelism (``_expert_parallel``, used when the mesh has an ``expert`` axis): experts
  are split over ``expert``, and so are the tokens (the batch rule includes it). Inside a
  ``shard_map`` each device all-gathers the tokens (and their routing) of its expert group,
  computes the assignments that fall on its own experts, and a reduce-scatter (``psum_scatter``)
  sums every device's contribution and returns each token's output to the device it came from.
  Why this rather than an all-to-all: it is dropless with static shapes and no capacity factor —
  a fixed-size all-to-all must either drop tokens past a capacity or reserve the worst case
  (every assignment to one device, ``A``× the gathered tokens), and a ragged all-to-all needs
  backend support XLA:CPU lacks. Its traffic is the gathered tokens, ``(ep - 1)·N_local·D`` per
  device each way, independent of ``A``. Gradients come from the same collectives transposed.
  Code already inside a ``shard_map`` over the whole mesh (the paged rollout engine, whose
  ``Sharding.manual_rows`` says so) holds its own experts and runs the same exchange directly.
* Load-balancing statistics (``load_balance_stats``) come back with every output.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from r1jax.models.config import ModelConfig
from r1jax.models.layers import param, swiglu
from r1jax.sharding import Sharding


class Routing(NamedTuple):
    indices_NxA: jax.Array  # int32, the chosen experts of each token
    weights_NxA: jax.Array  # float32 combine weights
    probs_NxX: jax.Array    # float32 scores normalized to sum to 1 per token (for statistics)


class MoEStats(NamedTuple):
    """Load-balancing statistics of one MoE layer (stacked over layers: a leading ``Y`` axis).

    ``token_fraction [X]``: share of the token-expert assignments each expert received (sums to
    1); ``router_prob [X]``: mean normalized router score per expert; ``aux_loss []``: the
    Switch / Qwen3-MoE balancing loss ``X · Σ_x (count_x / N) · router_prob_x`` (``A`` when
    perfectly balanced; scale by a coefficient to train with it); ``max_over_mean_load []``:
    ``max_x count_x / mean_x count_x``; ``expert_indices [N, A]``: the choice, for router replay.
    Padding tokens (``valid_N`` false) are left out of every statistic.
    """

    token_fraction: jax.Array
    router_prob: jax.Array
    aux_loss: jax.Array
    max_over_mean_load: jax.Array
    expert_indices: jax.Array


def router_scores(cfg: ModelConfig, logits_NxX):
    """``softmax(logits)`` or ``sigmoid(logits)`` per ``cfg.scoring``, in float32."""
    logits_NxX = logits_NxX.astype(jnp.float32)
    if cfg.scoring == "softmax":
        return jax.nn.softmax(logits_NxX, axis=-1)
    return jax.nn.sigmoid(logits_NxX)


def choose_experts(cfg: ModelConfig, scores_NxX, bias_X=None):
    """The ``A`` experts of each token: top-k of ``s + b`` over the allowed experts.

    Group-limited (``n_group > 1``): the experts form ``n_group`` equal groups, each group is
    ranked by the sum of its two best ``s + b``, and only the ``topk_group`` best groups stay
    eligible (DeepSeek-V3). Returns int32 ``[N, A]``.
    """
    choice_NxX = scores_NxX if bias_X is None else scores_NxX + bias_X.astype(jnp.float32)
    if cfg.n_group > 1:
        n, experts = choice_NxX.shape
        per_group = experts // cfg.n_group
        grouped = choice_NxX.reshape(n, cfg.n_group, per_group)
        group_score_NxG = jax.lax.top_k(grouped, 2)[0].sum(-1)
        _, best_groups = jax.lax.top_k(group_score_NxG, cfg.topk_group)
        keep_NxG = jax.nn.one_hot(best_groups, cfg.n_group, dtype=bool).any(axis=1)
        keep_NxX = jnp.repeat(keep_NxG, per_group, axis=1)
        choice_NxX = jnp.where(keep_NxX, choice_NxX, -jnp.inf)
    return jax.lax.top_k(choice_NxX, cfg.num_experts_per_tok)[1].astype(jnp.int32)


def expert_index_dtype(count: int):
    """The smallest unsigned integer dtype that holds ``0 … count - 1``: a recorded routing is
    ``tokens × MoE layers × A`` of them, so at rollout scale the width matters (uint8 up to 256
    experts)."""
    for dtype in (jnp.uint8, jnp.uint16, jnp.uint32):
        if count - 1 <= jnp.iinfo(dtype).max:
            return dtype
    raise ValueError(f"{count} experts do not fit an unsigned 32-bit index")


def route(cfg: ModelConfig, logits_NxX, bias_X=None, expert_indices_NxA=None) -> Routing:
    """Scores → chosen experts (or the given ones) → combine weights.

    ``w_na = γ · s_{n,e_na} / (Σ_a s_{n,e_na} + 1e-20)`` with ``norm_topk_prob``, else
    ``γ · s_{n,e_na}``; ``γ = routed_scaling_factor``. The bias never enters ``w``. A replayed
    token with any entry ``>= X`` takes the fresh choice instead (module docstring).
    """
    scores_NxX = router_scores(cfg, logits_NxX)
    # The choice is discrete: no gradient flows through it, only through the weights.
    choose = lambda: choose_experts(cfg, jax.lax.stop_gradient(scores_NxX), bias_X)  # noqa: E731
    if expert_indices_NxA is None:
        indices_NxA = choose()
    else:
        replay_NxA = expert_indices_NxA.astype(jnp.int32)
        recorded_N = jnp.all((replay_NxA >= 0) & (replay_NxA < scores_NxX.shape[1]), axis=1)
        indices_NxA = jnp.where(recorded_N[:, None], replay_NxA, choose())
    weights_NxA = jnp.take_along_axis(scores_NxX, indices_NxA, axis=1)
    if cfg.norm_topk_prob:
        weights_NxA = weights_NxA / (weights_NxA.sum(-1, keepdims=True) + 1e-20)
    weights_NxA = weights_NxA * cfg.routed_scaling_factor
    probs_NxX = scores_NxX
    if cfg.scoring == "sigmoid":
        probs_NxX = scores_NxX / scores_NxX.sum(-1, keepdims=True)
    return Routing(indices_NxA, weights_NxA, probs_NxX)


def load_balance_stats(probs_NxX, indices_NxA, valid_N=None) -> MoEStats:
    """``MoEStats`` of one layer's routing; ``valid_N`` marks real tokens (default: all)."""
    n, experts = probs_NxX.shape
    valid_N = jnp.ones((n,), jnp.float32) if valid_N is None else valid_N.astype(jnp.float32)
    tokens = jnp.maximum(valid_N.sum(), 1.0)
    # A scatter-add, not a one-hot [N, A, X]: at real scale that would be gigabytes.
    weight_R = jnp.broadcast_to(valid_N[:, None], indices_NxA.shape).reshape(-1)
    count_X = jnp.zeros((experts,), jnp.float32).at[indices_NxA.reshape(-1)].add(weight_R)
    count_X = jax.lax.stop_gradient(count_X)
    router_prob_X = (probs_NxX * valid_N[:, None]).sum(axis=0) / tokens
    aux_loss = experts * jnp.sum(count_X / tokens * router_prob_X)
    return MoEStats(
        token_fraction=count_X / jnp.maximum(count_X.sum(), 1.0),
        router_prob=router_prob_X,
        aux_loss=aux_loss,
        max_over_mean_load=count_X.max() / jnp.maximum(count_X.mean(), 1e-9),
        expert_indices=indices_NxA,
    )


def expert_swiglu(x_NxD, indices_NxA, weights_NxA, gate_XxDxF, up_XxDxF, down_XxFxD,
                  expert_offset=0):
    """``y_n = Σ_a w_na · down_e(silu(gate_e x_n) ⊙ up_e x_n)``, ``e = indices_na``, dropless.

    The weights hold experts ``expert_offset … expert_offset + X - 1``; assignments to other
    experts contribute nothing (the expert-parallel shards). Returns ``[N, D]`` in x's dtype.
    """
    n, per_token = indices_NxA.shape
    num = gate_XxDxF.shape[0]
    local_R = indices_NxA.reshape(-1) - expert_offset
    mine_R = (local_R >= 0) & (local_R < num)
    # Foreign assignments sort after every local expert's rows, outside all groups: ragged_dot
    # gives those rows zeros.
    key_R = jnp.where(mine_R, local_R, num)
    order_R = jnp.argsort(key_R, stable=True)
    token_R = order_R // per_token
    sizes_X = jnp.zeros((num + 1,), jnp.int32).at[key_R].add(1)[:num]
    dtype = x_NxD.dtype
    xs_RxD = jnp.take(x_NxD, token_R, axis=0)
    h_RxF = swiglu(jax.lax.ragged_dot(xs_RxD, gate_XxDxF.astype(dtype), sizes_X),
                   jax.lax.ragged_dot(xs_RxD, up_XxDxF.astype(dtype), sizes_X))
    ys_RxD = jax.lax.ragged_dot(h_RxF, down_XxFxD.astype(dtype), sizes_X)
    w_R = jnp.where(mine_R, weights_NxA.reshape(-1), 0.0)[order_R]
    weighted_RxD = ys_RxD.astype(jnp.float32) * w_R[:, None]
    y_NxD = jnp.zeros((n, x_NxD.shape[1]), jnp.float32).at[token_R].add(weighted_RxD)
    return y_NxD.astype(dtype)


def _expert_parallel(x_NxD, routing: Routing, gate, up, down, sharding: Sharding):
    """``expert_swiglu`` with the experts split over the mesh's ``expert`` axis (module doc)."""
    mesh = sharding.mesh
    ep = mesh.shape["expert"]
    if gate.shape[0] % ep:
        raise ValueError(f"{gate.shape[0]} routed experts do not split over an expert mesh axis "
                         f"of {ep}; make the expert axis size divide n_routed_experts")
    token_spec = sharding.spec(("batch", None), x_NxD.shape)
    row_axes = token_spec[0] if token_spec else None
    row_axes = () if row_axes is None else (row_axes,) if isinstance(row_axes, str) else row_axes
    rows = P(row_axes or None)
    local = functools.partial(_on_expert_group, gathered="expert" in row_axes)
    experts = P("expert")
    fn = jax.shard_map(local, mesh=mesh, in_specs=(rows, rows, rows, experts, experts, experts),
                       out_specs=rows)
    return fn(x_NxD, routing.indices_NxA, routing.weights_NxA, gate, up, down)


def _on_expert_group(x_NxD, indices_NxA, weights_NxA, gate, up, down, *, gathered: bool):
    """One device's part of expert parallelism, inside a ``shard_map`` manual over ``expert``:
    its own experts (a contiguous block of them) on its expert group's tokens — gathered from
    the group when the rows are split over ``expert`` (``gathered``), the outputs then summed
    and scattered back to the devices the tokens came from; else summed."""
    offset = jax.lax.axis_index("expert") * gate.shape[0]
    if gathered:
        x_NxD, indices_NxA, weights_NxA = (
            jax.lax.all_gather(a, "expert", tiled=True) for a in (x_NxD, indices_NxA, weights_NxA))
    y_NxD = expert_swiglu(x_NxD, indices_NxA, weights_NxA, gate, up, down, offset)
    if gathered:
        return jax.lax.psum_scatter(y_NxD, "expert", scatter_dimension=0, tiled=True)
    return jax.lax.psum(y_NxD, "expert")


def moe_ffn(cfg: ModelConfig, p: dict[str, Any], x_NxD, *, valid_N=None,
            expert_indices_NxA=None, sharding: Sharding | None = None):
    """The MoE layer on flattened tokens: routed experts (+ shared experts). Returns
    ``(y [N, D] in x's dtype, MoEStats)``.

    ``p`` holds ``router_kernel [D, X]``, ``gate_kernel``/``up_kernel [X, D, F]``,
    ``down_kernel [X, F, D]``, optionally ``score_bias [X]`` and the shared experts'
    ``shared_gate_kernel``/``shared_up_kernel [D, Fs]``, ``shared_down_kernel [Fs, D]``.
    ``expert_indices_NxA`` replays a routing instead of choosing one.
    """
    dtype = x_NxD.dtype
    logits_NxX = jnp.dot(x_NxD, p["router_kernel"].astype(dtype),
                         preferred_element_type=jnp.float32)
    routing = route(cfg, logits_NxX, p.get("score_bias"), expert_indices_NxA)
    experts = (p["gate_kernel"], p["up_kernel"], p["down_kernel"])
    if sharding is not None and sharding.mesh.shape.get("expert", 1) > 1:
        if sharding.manual_rows is None:
            y_NxD = _expert_parallel(x_NxD, routing, *experts, sharding)
        else:  # already inside a shard_map (the paged rollout): the experts here are local
            y_NxD = _on_expert_group(x_NxD, routing.indices_NxA, routing.weights_NxA, *experts,
                                     gathered="expert" in sharding.manual_rows)
    else:
        y_NxD = expert_swiglu(x_NxD, routing.indices_NxA, routing.weights_NxA, *experts)
    if cfg.n_shared_experts:
        h_NxFs = swiglu(x_NxD @ p["shared_gate_kernel"].astype(dtype),
                        x_NxD @ p["shared_up_kernel"].astype(dtype))
        y_NxD = y_NxD + h_NxFs @ p["shared_down_kernel"].astype(dtype)
    return y_NxD, load_balance_stats(routing.probs_NxX, routing.indices_NxA, valid_N)


class MoE(nn.Module):
    """The parameters of ``moe_ffn`` (logical axes: experts on ``exp``) and its call on
    ``[B, L, D]`` activations; returns ``(y [B, L, D], MoEStats)``."""

    cfg: ModelConfig
    sharding: Sharding | None = None

    @nn.compact
    def __call__(self, x_BxLxD, valid_BxL=None, expert_indices_BxLxA=None):
        cfg = self.cfg
        pdtype = cfg.weight_dtype
        init = nn.initializers.normal(stddev=0.02)
        D, X, F = cfg.hidden_size, cfg.n_routed_experts, cfg.moe_intermediate_size
        # Inside a shard_map over the mesh (``Sharding.manual_rows``) a device holds its experts.
        local = X
        if self.sharding is not None and self.sharding.manual_rows is not None:
            local = X // self.sharding.mesh.shape.get("expert", 1)
        p = {
            "router_kernel": param(self, "router_kernel", init, (D, X), ("embed", None), pdtype),
            "gate_kernel": param(self, "gate_kernel", init, (local, D, F),
                                 ("exp", "embed", "mlp"), pdtype),
            "up_kernel": param(self, "up_kernel", init, (local, D, F), ("exp", "embed", "mlp"),
                               pdtype),
            "down_kernel": param(self, "down_kernel", init, (local, F, D),
                                 ("exp", "mlp", "embed"), pdtype),
        }
        if cfg.score_correction_bias:
            p["score_bias"] = param(self, "score_bias", nn.initializers.zeros, (X,), (None,),
                                    jnp.float32)
        if cfg.n_shared_experts:
            fs = cfg.n_shared_experts * F
            p["shared_gate_kernel"] = param(self, "shared_gate_kernel", init, (D, fs),
                                            ("embed", "mlp"), pdtype)
            p["shared_up_kernel"] = param(self, "shared_up_kernel", init, (D, fs),
                                          ("embed", "mlp"), pdtype)
            p["shared_down_kernel"] = param(self, "shared_down_kernel", init, (fs, D),
                                            ("mlp", "embed"), pdtype)
        batch, length, _ = x_BxLxD.shape
        n = batch * length
        y_NxD, stats = moe_ffn(
            cfg, p, x_BxLxD.reshape(n, D),
            valid_N=None if valid_BxL is None else valid_BxL.reshape(n),
            expert_indices_NxA=(None if expert_indices_BxLxA is None
                                else expert_indices_BxLxA.reshape(n, -1)),
            sharding=self.sharding)
        return y_NxD.reshape(batch, length, D), stats
