"""Jitted sampling of G completions per prompt: a lockstep engine and a paged, continuously
batched one, behind one ``generate``."""
from r1jax.rollout.engine import (
    DEFAULT_PROMPT_BUCKETS,
    Rollout,
    bucket_length,
    cut_at_stop_strings,
    generate,
)
from r1jax.rollout.sampling import SamplingParams, sample
from r1jax.rollout.stops import StopCriteria

__all__ = ["DEFAULT_PROMPT_BUCKETS", "Rollout", "SamplingParams", "StopCriteria", "bucket_length",
           "cut_at_stop_strings", "generate", "sample"]
