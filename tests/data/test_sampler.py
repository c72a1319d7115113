"""The sampler: deterministic, whole epochs, and resumable from a saved (epoch, index)."""
import numpy as np
import pytest

from r1jax.data import Sampler, SamplerState


def test_each_epoch_is_a_permutation_and_epochs_differ():
    sampler = Sampler(10, seed=3)
    first, second = sampler.epoch_order(0), sampler.epoch_order(1)
    assert sorted(first) == list(range(10)) and sorted(second) == list(range(10))
    assert not np.array_equal(first, second)
    assert np.array_equal(first, Sampler(10, seed=3).epoch_order(0))
    assert not np.array_equal(first, Sampler(10, seed=4).epoch_order(0))
    assert list(Sampler(5, shuffle=False).epoch_order(2)) == [0, 1, 2, 3, 4]


def test_batches_run_across_epoch_boundaries():
    sampler = Sampler(7, seed=0)
    indices, state = sampler.take(SamplerState(), 10)
    assert list(indices) == list(sampler.epoch_order(0)) + list(sampler.epoch_order(1)[:3])
    assert state == SamplerState(epoch=1, index=3)
    indices, state = sampler.take(state, 4)
    assert state == SamplerState(epoch=2, index=0) and len(indices) == 4
    empty, same = sampler.take(state, 0)
    assert len(empty) == 0 and same == state


def test_resume_draws_what_the_uninterrupted_run_would():
    sampler = Sampler(13, seed=11)
    state, straight = SamplerState(), []
    for _ in range(9):
        batch, state = sampler.take(state, 5)
        straight.append(batch)
    state, resumed = SamplerState(), []
    for step in range(9):
        if step == 4:  # checkpoint, then a new process restores it
            saved = sampler.state_dict(state)
            state = Sampler(13, seed=11).restore(saved)
        batch, state = sampler.take(state, 5)
        resumed.append(batch)
    assert all(np.array_equal(a, b) for a, b in zip(straight, resumed))


@pytest.mark.parametrize("other, message", [
    (Sampler(14, seed=11), "num_items=13"), (Sampler(13, seed=12), "seed=11"),
    (Sampler(13, seed=11, shuffle=False), "shuffle=1"),
])
def test_restore_refuses_another_order(other, message):
    saved = Sampler(13, seed=11).state_dict(SamplerState(2, 5))
    with pytest.raises(ValueError, match=message):
        other.restore(saved)


def test_bad_states():
    with pytest.raises(ValueError, match="out of range"):
        Sampler(5).take(SamplerState(0, 5), 1)
    with pytest.raises(ValueError, match="num_items"):
        Sampler(0)
