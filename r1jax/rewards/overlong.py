"""DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), measured in tokens.

Truncated samples carry no usable answer, yet a hard 0 for them punishes sound reasoning that merely
ran long. DAPO instead ramps a penalty over the last ``cache_tokens`` before the limit:

    R_length(y) = 0                                   if |y| <= L_max - L_cache
                = ((L_max - L_cache) - |y|) / L_cache  if L_max - L_cache < |y| <= L_max
                = -1                                  if |y| > L_max
"""
from __future__ import annotations


def overlong_penalty(num_tokens: int, *, max_tokens: int, cache_tokens: int) -> float:
    """The length penalty in [-1, 0] for a completion of ``num_tokens`` tokens.

    ``max_tokens`` is DAPO's L_max (the generation budget); ``cache_tokens`` its L_cache, the
    length of the ramp just below it. ``cache_tokens=0`` gives the hard cliff: 0 up to L_max, -1 past.
    """
    if num_tokens < 0:
        raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
    if max_tokens <= 0 or not 0 <= cache_tokens <= max_tokens:
        raise ValueError(
            f"need max_tokens > 0 and 0 <= cache_tokens <= max_tokens, got max_tokens={max_tokens}, "
            f"cache_tokens={cache_tokens}")
    if num_tokens > max_tokens:
        return -1.0
    free = max_tokens - cache_tokens
    if num_tokens <= free:
        return 0.0
    return (free - num_tokens) / cache_tokens
