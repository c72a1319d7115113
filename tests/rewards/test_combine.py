"""Weighted combination: component selection, None propagation, counted component errors."""
import pytest

from r1jax.data import SyntheticConfig, problem_set
from r1jax.rewards import RewardConfig, RewardInput, score

GOOD = "<think>3 + 4 = 7</think> <answer>7</answer>"


def test_weighted_sum_of_selected_components():
    config = RewardConfig(weights=(("accuracy", 1.0), ("format", 0.5), ("language", 0.25)))
    breakdown = score(RewardInput(GOOD, answer="7"), config)
    # think text "3 + 4 = 7" has no words -> language 0.0
    assert breakdown.components == {"accuracy": 1.0, "format": 1.0, "language": 0.0}
    assert breakdown.total == pytest.approx(1.5)
    wrong = score(RewardInput("<answer>8</answer>", answer="7"), config)
    assert wrong.total == 0.0


def test_unjudgeable_accuracy_makes_the_total_none():
    breakdown = score(RewardInput(GOOD, answer=r"\frac{"))
    assert breakdown.components["accuracy"] is None and breakdown.total is None
    # ...unless accuracy has weight 0: then it is reported but does not count.
    config = RewardConfig(weights=(("accuracy", 0.0), ("format", 1.0)))
    assert score(RewardInput(GOOD, answer=r"\frac{"), config).total == 1.0


def test_a_raising_component_is_none_and_counted():
    def explode(answer):
        raise RuntimeError("verifier bug")

    breakdown = score(RewardInput(GOOD, verifier=explode))
    assert breakdown.total is None and breakdown.components["accuracy"] is None
    assert breakdown.errors == ("accuracy: RuntimeError: verifier bug",)
    nothing_to_judge = score(RewardInput(GOOD))
    assert nothing_to_judge.total is None and "no verifier, tests or gold answer" in nothing_to_judge.errors[0]


def test_overlong_and_language_components():
    config = RewardConfig(weights=(("overlong", 1.0), ("language", 1.0)), max_tokens=100, cache_tokens=20)
    text = "<think>因此 答案 是 七</think><answer>7</answer>"
    assert score(RewardInput(text, answer="7", num_tokens=90, language="zh"), config).components == {
        "overlong": pytest.approx(-0.5), "language": 1.0}
    assert score(RewardInput(text, answer="7", num_tokens=90), config).components["language"] == 0.0


def test_synthetic_problems_use_their_verifier():
    problem = problem_set(SyntheticConfig(task="countdown", difficulty=2, num_examples=1))[0]
    right = RewardInput.from_problem(problem, f"<think>t</think><answer>{problem.answer}</answer>")
    assert score(right).total == 2.0
    wrong = RewardInput.from_problem(problem, "<think>t</think><answer>1 + 1</answer>")
    assert score(wrong).total == 1.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(weights=(("accuracy", 1.0), ("bogus", 1.0))), "unknown component 'bogus'"),
    (dict(weights=(("format", 1.0), ("format", 2.0))), "names a component twice"),
    (dict(weights=(("overlong", 1.0),)), "needs max_tokens"),
    (dict(weights=(("overlong", 1.0),), max_tokens=10, cache_tokens=20), "cache_tokens"),
    (dict(code_timeout_s=0), "code_timeout_s"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RewardConfig(**kwargs)


def test_from_mapping():
    config = RewardConfig.from_mapping({"accuracy": 1, "format": 0.1})
    assert config.weights == (("accuracy", 1.0), ("format", 0.1))
