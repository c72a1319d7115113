"""DAPO soft overlong punishment (eq. 13), in tokens."""
import pytest

from r1jax.rewards import overlong_penalty


@pytest.mark.parametrize("num_tokens, expected", [
    (0, 0.0), (600, 0.0), (700, 0.0), (750, -0.25), (800, -0.5), (900, -1.0), (1000, -1.0), (1001, -1.0),
])
def test_piecewise(num_tokens, expected):
    # L_max = 900, L_cache = 200: free up to 700, ramp to -1 at 900, -1 beyond.
    assert overlong_penalty(num_tokens, max_tokens=900, cache_tokens=200) == pytest.approx(expected)


def test_zero_cache_is_a_hard_cliff():
    assert overlong_penalty(100, max_tokens=100, cache_tokens=0) == 0.0
    assert overlong_penalty(101, max_tokens=100, cache_tokens=0) == -1.0


@pytest.mark.parametrize("kwargs", [dict(max_tokens=0, cache_tokens=0), dict(max_tokens=10, cache_tokens=11),
                                    dict(max_tokens=10, cache_tokens=-1)])
def test_bad_settings_raise(kwargs):
    with pytest.raises(ValueError, match="max_tokens"):
        overlong_penalty(5, **kwargs)
    with pytest.raises(ValueError, match="num_tokens"):
        overlong_penalty(-1, max_tokens=10, cache_tokens=2)
