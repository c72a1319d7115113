"""GRPO: the loss family (pure jnp), the sharded update step, and the settings that select them."""
from r1jax.optim import (OptimConfig, TrainState, init_train_state, learning_rate_schedule,
                         make_optimizer)
from r1jax.rl.config import GRPOConfig, LossConfig
from r1jax.rl.logprobs import completion_logprobs
from r1jax.rl.losses import grpo_loss, kl_penalty, per_token_loss, token_weights
from r1jax.rl.step import GRPOBatch, grpo_step, make_grpo_step, rollout_logprobs

__all__ = [
    "GRPOBatch", "GRPOConfig", "LossConfig", "OptimConfig", "TrainState", "completion_logprobs",
    "grpo_loss", "grpo_step", "init_train_state", "kl_penalty", "learning_rate_schedule",
    "make_grpo_step", "make_optimizer", "per_token_loss", "rollout_logprobs", "token_weights",
]
