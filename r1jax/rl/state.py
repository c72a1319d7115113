"""Train state and optimizer: AdamW with warmup + constant/cosine schedule and grad clipping."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from r1jax.rl.config import OptimConfig


@flax.struct.dataclass
class TrainState:
    """Everything an update changes. ``skipped_updates`` counts non-finite steps that were not
    applied; ``consecutive_skips`` resets at the next applied update."""

    step: jax.Array
    params: Any
    opt_state: Any
    skipped_updates: jax.Array
    consecutive_skips: jax.Array


def learning_rate_schedule(cfg: OptimConfig) -> optax.Schedule:
    """Linear warmup from 0, then constant, or cosine decay to ``final_lr_fraction × lr``."""
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
            decay_steps=cfg.total_steps, end_value=cfg.learning_rate * cfg.final_lr_fraction)
    if cfg.warmup_steps == 0:
        return optax.constant_schedule(cfg.learning_rate)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps),
         optax.constant_schedule(cfg.learning_rate)], [cfg.warmup_steps])


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    chain = []
    if cfg.max_grad_norm is not None:
        chain.append(optax.clip_by_global_norm(cfg.max_grad_norm))
    chain.append(optax.adamw(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                             weight_decay=cfg.weight_decay))
    return optax.chain(*chain)


def init_train_state(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
    """A fresh state. Jitted, so the optimizer moments are created in the parameters' shardings."""

    def create(p):
        zero = jnp.zeros((), jnp.int32)
        return TrainState(step=zero, params=p, opt_state=optimizer.init(p), skipped_updates=zero,
                          consecutive_skips=zero)

    return jax.jit(create)(params)


def shardings_of(tree: Any) -> Any:
    """The sharding of every array leaf (to pin a jitted step's inputs and outputs)."""
    return jax.tree.map(lambda x: x.sharding, tree)
