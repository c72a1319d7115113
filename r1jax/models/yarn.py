"""Rotary embeddings of Multi-head Latent Attention: plain RoPE or YaRN, in either pair layout.

DeepSeek-V2/V3 rotate only the ``qk_rope_head_dim`` rope part of each query and the one rope key
shared by all heads. Their long-context checkpoints use YaRN (``rope_type: yarn``): the inverse
frequencies are interpolated between the original ones and ones divided by ``factor``, and two
temperature corrections ("mscale") change the attention logits. The math is host-side numpy in
float64 (a table per model), rounded once to float32; the rotation itself is
``layers.apply_rope``, so MLA and the dense decoder rotate with the same code.

Letters as in ``r1jax/__init__.py``; ``Er`` is the rope head dim and ``Erh`` half of it.
"""
from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's temperature correction ``0.1 · mscale · ln(factor) + 1`` (1 when ``factor ≤ 1``)."""
    if factor <= 1.0:
        return 1.0
    return 0.1 * mscale * math.log(factor) + 1.0


@dataclasses.dataclass(frozen=True)
class YarnScaling:
    """YaRN RoPE scaling (``rope_scaling`` / ``rope_parameters`` with ``rope_type: yarn``).

    ``beta_fast``/``beta_slow`` are rotation counts over the original context: dimensions that turn
    more than ``beta_fast`` times keep their frequency, those that turn fewer than ``beta_slow``
    times are divided by ``factor``, and a linear ramp over the dimension index joins the two.
    ``mscale``/``mscale_all_dim`` set the two temperature corrections (see the properties).
    ``truncate`` rounds the ramp's ends outward to whole dimensions, as DeepSeek's code does.
    """

    factor: float
    original_max_position_embeddings: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float = 1.0
    mscale_all_dim: float = 0.0
    attention_factor: float | None = None
    truncate: bool = True

    def __post_init__(self):
        if not self.factor > 0:
            raise ValueError(f"YarnScaling.factor must be positive, got {self.factor}")
        if int(self.original_max_position_embeddings) < 1:
            raise ValueError("YarnScaling.original_max_position_embeddings must be >= 1, got "
                             f"{self.original_max_position_embeddings}")
        if not self.beta_fast > self.beta_slow > 0:
            raise ValueError(f"YarnScaling needs beta_fast > beta_slow > 0, got beta_fast="
                             f"{self.beta_fast}, beta_slow={self.beta_slow}")
        if self.mscale < 0 or self.mscale_all_dim < 0:
            raise ValueError(f"YarnScaling mscale and mscale_all_dim must be >= 0, got {self}")
        if self.attention_factor is not None and not self.attention_factor > 0:
            raise ValueError(f"YarnScaling.attention_factor must be positive or None, got "
                             f"{self.attention_factor}")

    @property
    def rope_attention_factor(self) -> float:
        """What cos and sin are multiplied by (so the rope part of every logit by its square):
        ``mscale(factor, mscale) / mscale(factor, mscale_all_dim)`` when both are set, else
        ``mscale(factor)``; DeepSeek-V3 sets both to 1, which makes it exactly 1."""
        if self.attention_factor is not None:
            return float(self.attention_factor)
        if self.mscale and self.mscale_all_dim:
            return yarn_mscale(self.factor, self.mscale) / yarn_mscale(self.factor,
                                                                       self.mscale_all_dim)
        return yarn_mscale(self.factor)

    @property
    def softmax_mscale(self) -> float:
        """What the softmax scale ``1/sqrt(qk_head_dim)`` is multiplied by: the square of
        ``mscale(factor, mscale_all_dim)``, applied to every logit (rope and no-rope parts);
        1 when ``mscale_all_dim`` is unset."""
        if not self.mscale_all_dim:
            return 1.0
        return yarn_mscale(self.factor, self.mscale_all_dim) ** 2


def yarn_correction_range(dim: int, theta: float, scaling: YarnScaling) -> tuple[float, float]:
    """The dimension indices ``(low, high)`` between which YaRN's ramp runs.

    Pair i turns ``L / (2π θ^(2i/dim))`` times over the original context L, so it turns ``r``
    times at ``i(r) = dim · ln(L / (2π r)) / (2 ln θ)``; low = i(beta_fast), high = i(beta_slow),
    floored/ceiled when ``truncate``, clipped to ``[0, dim - 1]``.
    """
    context = scaling.original_max_position_embeddings

    def index_of(rotations):
        return dim * math.log(context / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = index_of(scaling.beta_fast), index_of(scaling.beta_slow)
    if scaling.truncate:
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, dim - 1)


def rope_inverse_frequencies(dim: int, theta: float, scaling: YarnScaling | None) -> np.ndarray:
    """``[dim/2]`` float32 inverse frequencies ``ω_i = θ^(-2i/dim)``, YaRN-blended when given.

    With YaRN: ``ω'_i = ω_i · (1 - γ_i) + (ω_i / factor) · γ_i`` where
    ``γ_i = clip((i - low) / (high - low), 0, 1)`` (``yarn_correction_range``; ``high`` is nudged
    by 0.001 when it equals ``low``), so high-frequency pairs (small i) keep ``ω_i``.
    """
    inv_freq = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    if scaling is None:
        return inv_freq.astype(np.float32)
    low, high = yarn_correction_range(dim, theta, scaling)
    if low == high:
        high += 0.001  # a zero-width ramp would divide by zero
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    return (inv_freq * (1.0 - ramp) + inv_freq / scaling.factor * ramp).astype(np.float32)


def rope_tables(dim: int, theta: float, scaling: YarnScaling | None, positions):
    """``(cos, sin)``, each ``[..., 1, dim/2]`` float32, of every position in ``positions``.

    YaRN's ``rope_attention_factor`` is folded into both tables, so ``layers.apply_rope`` with
    them returns ``factor · rotate(x)``. The trailing 1 broadcasts over heads.
    """
    inv_freq_Erh = jnp.asarray(rope_inverse_frequencies(dim, theta, scaling))
    angles = jnp.asarray(positions).astype(jnp.float32)[..., None] * inv_freq_Erh
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    if scaling is not None and scaling.rope_attention_factor != 1.0:
        cos, sin = cos * scaling.rope_attention_factor, sin * scaling.rope_attention_factor
    return cos[..., None, :], sin[..., None, :]


def deinterleave(x):
    """Pairs ``(x0, x1), (x2, x3), …`` (DeepSeek's interleaved rope layout) regrouped as halves
    ``(x0, x2, …, x1, x3, …)``, the layout ``layers.apply_rope`` rotates.

    Applied to queries and keys alike it leaves their dot products as the interleaved rotation
    gives them; the rotated parts then stay in the halves layout (also in the latent cache).
    """
    return jnp.concatenate([x[..., 0::2], x[..., 1::2]], axis=-1)
