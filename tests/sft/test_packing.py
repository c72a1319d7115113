"""Sequence packing: layout, response-only loss mask, first-fit order, overflow, batching."""
import numpy as np
import pytest

from r1jax.sft import iterate_batches, pack_examples, per_example_losses


def test_segments_positions_targets_and_response_mask():
    examples = [([5, 6], [7, 8, 9]), ([10], [11, 12])]
    rows = pack_examples(examples, 10, pad_id=0)
    assert rows.num_rows == 1
    np.testing.assert_array_equal(rows.tokens[0], [5, 6, 7, 8, 9, 10, 11, 12, 0, 0])
    np.testing.assert_array_equal(rows.segment_ids[0], [1, 1, 1, 1, 1, 2, 2, 2, 0, 0])
    np.testing.assert_array_equal(rows.positions[0], [0, 1, 2, 3, 4, 0, 1, 2, 0, 0])
    # Position t predicts token t + 1 of its own segment; the last token of a segment predicts
    # nothing (the next segment's first token is not its continuation).
    np.testing.assert_array_equal(rows.targets[0], [6, 7, 8, 9, 0, 11, 12, 0, 0, 0])
    np.testing.assert_array_equal(rows.loss_weights[0], [0, 1, 1, 1, 0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(rows.example_ids[0], [0, 0, 0, 0, 0, 1, 1, 1, -1, -1])


def test_loss_on_all_tokens_for_pretraining():
    rows = pack_examples([((), [1, 2, 3]), ((), [4, 5])], 8, loss_on="all")
    np.testing.assert_array_equal(rows.loss_weights[0], [1, 1, 0, 1, 0, 0, 0, 0])


def test_first_fit_is_greedy_in_order_and_deterministic():
    lengths = [6, 5, 3, 4, 2, 1]
    examples = [((), list(range(1, n + 1))) for n in lengths]
    rows = pack_examples(examples, 8)
    # 6 → row 0 (2 left); 5 → row 1 (3 left); 3 → row 1 (0 left); 4 → row 2; 2 → row 0; 1 → row 2.
    placed = [sorted(set(r[r >= 0])) for r in rows.example_ids]
    assert placed == [[0, 4], [1, 2], [3, 5]]
    again = pack_examples(examples, 8)
    for a, b in zip(vars(rows).values(), vars(again).values()):
        np.testing.assert_array_equal(a, b)


def test_overflow_raises_or_truncates():
    with pytest.raises(ValueError, match="example 0 has 5 tokens"):
        pack_examples([([1, 2], [3, 4, 5])], 4)
    rows = pack_examples([([1, 2], [3, 4, 5])], 4, overflow="truncate")
    np.testing.assert_array_equal(rows.tokens[0], [1, 2, 3, 4])
    np.testing.assert_array_equal(rows.loss_weights[0], [0, 1, 1, 0])


def test_batches_pad_the_last_one_with_empty_rows():
    rows = pack_examples([((), [1, 2, 3])] * 5, 4)
    batches = list(iterate_batches(rows, 2))
    assert [b.num_rows for b in batches] == [2, 2, 2]
    assert batches[-1].loss_weights[1].sum() == 0 and (batches[-1].segment_ids[1] == 0).all()
    assert len(list(iterate_batches(rows, 2, drop_remainder=True))) == 2


def test_per_example_losses_average_each_example_over_its_weighted_tokens():
    rows = pack_examples([([1], [2, 3]), ([4], [5])], 6)
    logp = np.full(rows.tokens.shape, -9.0)
    logp[0, :5] = [-1.0, -2.0, -4.0, -8.0, -16.0]
    losses = per_example_losses(logp, rows, 2)
    np.testing.assert_allclose(losses, [1.5, 8.0])
