"""What to sample: the one request type every caller of ``r1jax.completions.complete`` fills in.

Host code (no jax): configs and evaluation settings hold a request, and reward workers import
those settings.
"""
from __future__ import annotations

import dataclasses

# End-of-turn tokens of common chat vocabularies (``SamplingRequest.stop_at_end_of_turn``).
END_OF_TURN_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<｜end▁of▁sentence｜>")


@dataclasses.dataclass(frozen=True)
class SamplingRequest:
    """What to sample for each prompt: up to ``max_new_tokens`` tokens at ``temperature`` (0:
    greedy) with top-p/top-k truncation, ending at the tokenizer's EOS, at any of
    ``stop_strings``, and (``stop_at_end_of_turn``) at the end-of-turn tokens of chat vocabularies.
    How many samples per prompt is the caller's group size."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_strings: tuple[str, ...] = ()
    stop_at_end_of_turn: bool = False

    def __post_init__(self):
        if isinstance(self.max_new_tokens, bool) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        object.__setattr__(self, "stop_strings", tuple(str(s) for s in self.stop_strings))
        if any(not s for s in self.stop_strings):
            raise ValueError("stop_strings must not contain an empty string")

    def stop_ids(self, tokenizer) -> list[int]:
        ids = {tokenizer.eos_id} if tokenizer.eos_id is not None else set()
        if self.stop_at_end_of_turn:
            for token in END_OF_TURN_TOKENS:
                token_id = tokenizer.token_to_id(token)
                if token_id is not None:
                    ids.add(int(token_id))
        return sorted(ids)
