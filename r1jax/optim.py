"""Optimization shared by every trainer (GRPO, SFT, reward model): the train state, AdamW with
warmup + constant/cosine schedule and global-norm clipping, microbatch gradient accumulation, and a
guarded update.

``accumulate`` evaluates ``loss_fn(params, microbatch) -> (loss, sums)`` over ``num_microbatches``
equal slices of a batch with ``lax.scan``, summing float32 gradients, losses and the metric sums
(``*_min``/``*_max`` keys reduce by min/max). Losses must already be normalized for the whole batch
(the microbatches' losses add up to the batch's). ``guarded_update`` applies the optimizer unless
the loss or the gradient norm is not finite; a skipped update is counted, never applied.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "cosine")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup then a constant or cosine schedule, and global-norm clipping."""

    learning_rate: float = 1e-6
    warmup_steps: int = 0
    schedule: str = "constant"
    total_steps: int = 1000  # for the cosine schedule
    final_lr_fraction: float = 0.1
    b1: float = 0.9
    b2: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0

    def __post_init__(self):
        _check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        _check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(self.schedule in SCHEDULES, f"schedule {self.schedule!r} is not one of {SCHEDULES}")
        _check(self.total_steps > self.warmup_steps or self.schedule == "constant",
               f"total_steps ({self.total_steps}) must exceed warmup_steps ({self.warmup_steps})")
        _check(0 <= self.final_lr_fraction <= 1,
               f"final_lr_fraction must be in [0, 1], got {self.final_lr_fraction}")
        _check(self.max_grad_norm is None or self.max_grad_norm > 0,
               f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")


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


def init_train_state(params: Any, optimizer: optax.GradientTransformation,
                     shardings: Any = None) -> TrainState:
    """A fresh state, its optimizer moments created in the parameters' shardings (left to
    itself, XLA replicates the zeros on every device: a full copy of the moments per chip).
    ``shardings`` (default: the arrays' own) is for tracing it abstractly, where the parameters
    are tracers without a sharding (``r1jax.rl.aot``)."""
    if shardings is None:
        shardings = jax.tree.map(lambda x: getattr(x, "sharding", None), params)

    def place(moment, sharding):
        if isinstance(sharding, jax.sharding.NamedSharding):
            return jax.lax.with_sharding_constraint(moment, sharding)
        return moment

    def create(p):
        zero = jnp.zeros((), jnp.int32)
        opt_state = optax.tree_map_params(optimizer, place, optimizer.init(p), shardings)
        return TrainState(step=zero, params=p, opt_state=opt_state, skipped_updates=zero,
                          consecutive_skips=zero)

    return jax.jit(create)(params)


def shardings_of(tree: Any) -> Any:
    """The sharding of every array leaf (to pin a jitted step's inputs and outputs)."""
    return jax.tree.map(lambda x: x.sharding, tree)


def _merge(a: dict, b: dict) -> dict:
    out = {}
    for key in a:
        if key.endswith("_min"):
            out[key] = jnp.minimum(a[key], b[key])
        elif key.endswith("_max"):
            out[key] = jnp.maximum(a[key], b[key])
        else:
            out[key] = a[key] + b[key]
    return out


def split_microbatches(tree: Any, num: int) -> Any:
    """Every array's leading axis as ``[num, rows / num, …]``."""
    def split(x):
        if x.shape[0] % num:
            raise ValueError(f"batch of {x.shape[0]} rows does not split into {num} microbatches")
        return x.reshape(num, x.shape[0] // num, *x.shape[1:])
    return jax.tree.map(split, tree)


def accumulate(loss_fn: Callable, params: Any, batch: Any, num_microbatches: int):
    """``((loss, sums), grads)`` of ``loss_fn`` over the whole batch, one microbatch at a time."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if num_microbatches == 1:
        return grad_fn(params, batch)
    microbatches = split_microbatches(batch, num_microbatches)
    to_f32 = lambda g: jax.tree.map(lambda x: x.astype(jnp.float32), g)  # noqa: E731

    def add(carry, microbatch):
        (loss, sums), grads = carry
        (mb_loss, mb_sums), mb_grads = grad_fn(params, microbatch)
        grads = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), grads, mb_grads)
        return ((loss + mb_loss, _merge(sums, mb_sums)), grads), None

    (loss, sums), grads = grad_fn(params, jax.tree.map(lambda x: x[0], microbatches))
    rest = jax.tree.map(lambda x: x[1:], microbatches)
    ((loss, sums), grads), _ = jax.lax.scan(add, ((loss, sums), to_f32(grads)), rest)
    return (loss, sums), jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)


def guarded_update(state: TrainState, grads: Any, loss: jax.Array,
                   optimizer: optax.GradientTransformation) -> tuple[TrainState, dict]:
    """Apply ``optimizer`` to ``state`` unless the loss or gradient norm is not finite."""
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
    skipped = (~finite).astype(jnp.int32)
    new_state = TrainState(
        step=state.step + 1,
        params=jax.tree.map(keep, params, state.params),
        opt_state=jax.tree.map(keep, opt_state, state.opt_state),
        skipped_updates=state.skipped_updates + skipped,
        consecutive_skips=jnp.where(finite, 0, state.consecutive_skips + 1),
    )
    return new_state, {"grad_norm": grad_norm, "skipped": skipped}
