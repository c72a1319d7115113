"""A preference reward model: the decoder's backbone and a scalar head on the last token.

``r(x, y) = w · h_last(x ⊕ y) + b`` where ``h_last`` is the final hidden state of the last real
token (sequences are left-padded, so it sits in the last column). Trained with the Bradley–Terry
loss ``-log σ(r(x, y_chosen) - r(x, y_rejected))`` (Ouyang et al., 2022, eq. 1).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from r1jax import models
from r1jax.sharding import Sharding


def init_head(model_cfg: models.ModelConfig) -> dict:
    """A zero head: the model starts indifferent between any two responses."""
    return {"w": jnp.zeros((model_cfg.hidden_size,), jnp.float32),
            "b": jnp.zeros((), jnp.float32)}


def scores(model_cfg: models.ModelConfig, params: dict, tokens_BxL, attention_mask_BxL,
           sharding: Sharding | None = None) -> jax.Array:
    """``[B]`` float32 rewards of left-padded ``prompt ⊕ response`` sequences.

    ``params = {"backbone": decoder params, "head": {"w": [D], "b": []}}``.
    """
    out = models.forward(model_cfg, params["backbone"], tokens_BxL,
                         attention_mask_BxL=attention_mask_BxL, sharding=sharding)
    last_BxD = out.hidden_BxLxD[:, -1].astype(jnp.float32)
    return last_BxD @ params["head"]["w"] + params["head"]["b"]


def bradley_terry_loss(chosen_B, rejected_B):
    """Mean ``-log σ(r_c - r_r)`` and the fraction of pairs ranked correctly."""
    margin = chosen_B - rejected_B
    return jnp.mean(jax.nn.softplus(-margin)), jnp.mean((margin > 0).astype(jnp.float32))


def model_params(backbone: Any, model_cfg: models.ModelConfig) -> dict:
    return {"backbone": backbone, "head": init_head(model_cfg)}
