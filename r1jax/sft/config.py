"""SFT step settings as a frozen, validated dataclass."""
from __future__ import annotations

import dataclasses

from r1jax.optim import OptimConfig

# DeepSeek-R1's SFT: cosine decay from 5e-5 to 5e-6 (final_lr_fraction 0.1).
PAPER_OPTIM = OptimConfig(learning_rate=5e-5, schedule="cosine", final_lr_fraction=0.1,
                          weight_decay=0.0, max_grad_norm=1.0)


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """One SFT update: the optimizer, how a batch is cut into microbatches, and how log-probs are
    computed.

    ``max_loss_tokens``: when set, each microbatch scores only its first ``max_loss_tokens``
    loss-bearing positions (a static-size gather, so prompt tokens cost no LM-head work); more are
    dropped and counted in the ``dropped_loss_tokens`` metric. None scores every position.
    """

    optim: OptimConfig = PAPER_OPTIM
    num_microbatches: int = 1
    logprob_impl: str = "auto"
    max_loss_tokens: int | None = None

    def __post_init__(self):
        if self.num_microbatches < 1:
            raise ValueError(f"SFTConfig.num_microbatches must be >= 1, got {self.num_microbatches}")
        if self.max_loss_tokens is not None and self.max_loss_tokens < 1:
            raise ValueError(
                f"SFTConfig.max_loss_tokens must be >= 1 or None, got {self.max_loss_tokens}")
