"""What to sample: the one request type every caller of ``r1jax.completions.complete`` fills in.

Host code (no jax): configs and evaluation settings hold a request, and reward workers import
those settings.
"""
from __future__ import annotations

import dataclasses

# End-of-turn tokens of common chat vocabularies (``SamplingRequest.stop_at_end_of_turn``).
END_OF_TURN_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<｜end▁of▁sentence｜>")


ENGINES = ("lockstep", "paged")


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    """Which rollout engine samples (``r1jax.rollout.generate``), and the paged engine's sizes.

    ``kind="lockstep"`` decodes every row of a call together over a dense cache until the last
    one stops; ``"paged"`` keeps ``decode_slots`` rows decoding over a pool of ``kv_pages`` pages
    of ``page_size`` tokens and refills a slot as soon as its row stops (0: the engine's
    defaults). Both give the same tokens; the paged engine wins on long, long-tailed lengths.
    """

    kind: str = "lockstep"
    decode_slots: int = 0
    page_size: int = 16
    kv_pages: int = 0

    def __post_init__(self):
        if self.kind not in ENGINES:
            raise ValueError(f"engine.kind must be one of {ENGINES}, got {self.kind!r}")
        for name, low in (("decode_slots", 0), ("page_size", 1), ("kv_pages", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"engine.{name} must be a whole number >= {low}, got {value!r}")

    def generate_kwargs(self) -> dict:
        return dict(engine=self.kind, decode_slots=self.decode_slots, page_size=self.page_size,
                    kv_pages=self.kv_pages)


@dataclasses.dataclass(frozen=True)
class SamplingRequest:
    """What to sample for each prompt: up to ``max_new_tokens`` tokens at ``temperature`` (0:
    greedy) with top-p/top-k truncation, ending at the tokenizer's EOS, at any of
    ``stop_strings``, and (``stop_at_end_of_turn``) at the end-of-turn tokens of chat vocabularies.
    How many samples per prompt is the caller's group size; ``engine`` says which engine draws
    them."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_strings: tuple[str, ...] = ()
    stop_at_end_of_turn: bool = False
    engine: EngineSettings = EngineSettings()

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
        if not isinstance(self.engine, EngineSettings):
            raise ValueError(f"engine must be an EngineSettings, got {type(self.engine).__name__}")

    def stop_ids(self, tokenizer) -> list[int]:
        ids = {tokenizer.eos_id} if tokenizer.eos_id is not None else set()
        if self.stop_at_end_of_turn:
            for token in END_OF_TURN_TOKENS:
                token_id = tokenizer.token_to_id(token)
                if token_id is not None:
                    ids.add(int(token_id))
        return sorted(ids)
