"""The reward pool: results in order, raising items -> None and counted, hung items timed out with
their worker replaced, crashed workers counted; and batch scoring with metrics."""
import math
import operator
import os
import time

import pytest

from r1jax.data import SyntheticConfig, problem_set
from r1jax.rewards import RewardConfig, RewardInput, RewardPool, score_batch


@pytest.fixture(scope="module")
def pool():
    with RewardPool(2, timeout_s=3.0) as p:
        yield p


def test_values_come_back_in_order(pool):
    result = pool.map(operator.mul, [(i, i) for i in range(20)])
    assert result.values == tuple(i * i for i in range(20))
    assert (result.errors, result.timeouts, result.crashes) == (0, 0, 0)


def test_raising_items_give_none_and_are_counted(pool):
    result = pool.map(operator.truediv, [(1, 1), (1, 0), (4, 2)])
    assert result.values == (1.0, None, 2.0) and result.errors == 1
    assert "ZeroDivisionError" in result.messages[0]


def test_hung_item_times_out_and_the_pool_recovers(pool):
    result = pool.map(time.sleep, [(0,), (600,), (0,)])
    assert result.values == (None, None, None) and result.timeouts == 1 and result.errors == 0
    assert pool.map(operator.add, [(1, 2)]).values == (3,)


def test_dead_worker_is_counted_and_replaced(pool):
    result = pool.map(os._exit, [(3,)])
    assert result.values == (None,) and result.crashes == 1
    assert pool.map(operator.add, [(2, 2)] * 4).values == (4,) * 4


def test_inline_pool_counts_errors_without_processes():
    with RewardPool(0) as inline:
        result = inline.map(operator.truediv, [(1, 0), (2, 1)])
    assert result.values == (None, 2.0) and result.errors == 1


def test_score_batch_in_the_pool(pool):
    problems = problem_set(SyntheticConfig(task="arithmetic", difficulty=2, num_examples=3))
    samples = [
        RewardInput.from_problem(problems[0], f"<think>t</think><answer>{problems[0].answer}</answer>"),
        RewardInput.from_problem(problems[1], "no format, no answer"),
        RewardInput("<think>t</think><answer>1</answer>", answer=r"\frac{"),  # unparseable gold
        RewardInput("<think>t</think><answer>0.5</answer>", answer=r"\frac12"),
    ]
    scores = score_batch(samples, RewardConfig(), pool)
    assert scores.totals == (2.0, 0.0, None, 2.0)
    metrics = scores.metrics
    assert metrics["rewards/accuracy/mean"] == pytest.approx(2 / 3)
    assert metrics["rewards/accuracy/unjudged"] == 1.0
    assert metrics["rewards/format/mean"] == pytest.approx(3 / 4)
    assert metrics["rewards/total/unjudged"] == 1.0
    assert metrics["rewards/errors"] == 0.0 and metrics["rewards/timeouts"] == 0.0
    inline = score_batch(samples, RewardConfig())
    assert inline.totals == scores.totals


def test_metrics_count_raising_rewards():
    def broken_verifier(answer):
        raise ValueError("bad")

    scores = score_batch([RewardInput("<answer>1</answer>", verifier=broken_verifier)])
    assert scores.totals == (None,)
    assert scores.metrics["rewards/errors"] == 1.0
    assert math.isnan(scores.metrics["rewards/accuracy/mean"])
