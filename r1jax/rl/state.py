"""Moved to ``r1jax.optim`` (kept only while in-flight code still imports this path)."""
from r1jax.optim import *  # noqa: F401,F403
from r1jax.optim import (  # noqa: F401
    TrainState,
    init_train_state,
    learning_rate_schedule,
    make_optimizer,
    shardings_of,
)
