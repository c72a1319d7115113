"""Synthetic tasks: generators and verifiers agree on 10k random instances, steps are correct,
train/test are disjoint by construction, generation is deterministic."""
import random
import re

import pytest

from r1jax.data import SyntheticConfig, arithmetic, countdown, problem_set, split_of, synthetic

_STEP = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")


def _check_steps(steps):
    values = []
    for step in steps:
        a, op, b, c = _STEP.fullmatch(step).groups()
        a, b, c = int(a), int(b), int(c)
        assert c == {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b and a % b == 0 else None}[op], step
        values.append(c)
    return values


@pytest.mark.parametrize("task", sorted(synthetic.TASKS))
def test_generator_and_verifier_agree_on_10k_instances(task):
    rng = random.Random(f"agree/{task}")
    levels, sample = synthetic.TASKS[task]
    for i in range(10_000):
        difficulty = 1 + i % len(levels)
        inst = sample(rng, levels[difficulty], difficulty)
        assert inst.verify(inst.answer), inst
        assert not inst.verify(str(inst.target + 1)) and not inst.verify("")
        values = _check_steps(inst.steps)
        assert values[-1] == inst.target and inst.answer and inst.question
        if task == "arithmetic":
            assert len(inst.steps) == levels[difficulty].num_steps
            assert inst.answer == str(inst.target) and inst.verify(f" {inst.target}. ")
            assert all(0 <= v <= levels[difficulty].max_value for v in values)
            assert all(1 <= x <= levels[difficulty].max_operand for x in inst.operands)
        else:
            spec = levels[difficulty]
            assert len(inst.operands) == spec.num_numbers and len(inst.steps) == spec.num_numbers - 1
            assert 1 <= inst.target <= spec.max_target
            assert inst.verify(f"{inst.answer} = {inst.target}")
            assert not inst.verify(f"{inst.answer} = {inst.target + 1}")


@pytest.mark.parametrize("task", sorted(synthetic.TASKS))
@pytest.mark.parametrize("difficulty", [1, 3, 5])
def test_train_and_test_are_disjoint(task, difficulty):
    train = {i.key for seed in range(3) for i in synthetic.generate(
        SyntheticConfig(task=task, difficulty=difficulty, num_examples=3000, seed=seed))}
    test = {i.key for i in synthetic.generate(
        SyntheticConfig(task=task, difficulty=difficulty, num_examples=300, split="test"))}
    assert train and test and not (train & test)
    assert all(split_of(k, 0.1) == "train" for k in train) and all(split_of(k, 0.1) == "test" for k in test)


def test_split_is_a_fixed_function_of_the_key():
    assert split_of("arithmetic:3+4*2-5", 0.1) == split_of("arithmetic:3+4*2-5", 0.1)
    keys = [f"k{i}" for i in range(20_000)]
    share = sum(split_of(k, 0.1) == "test" for k in keys) / len(keys)
    assert 0.09 < share < 0.11
    # Growing the test fraction only moves keys from train to test.
    assert all(split_of(k, 0.2) == "test" for k in keys if split_of(k, 0.1) == "test")


def test_generation_is_deterministic_and_seeded():
    config = SyntheticConfig(task="countdown", difficulty=3, num_examples=50, seed=7)
    assert synthetic.generate(config) == synthetic.generate(config)
    assert synthetic.generate(config) != synthetic.generate(SyntheticConfig(
        task="countdown", difficulty=3, num_examples=50, seed=8))


def test_unique_sets_and_too_small_spaces():
    unique = synthetic.generate(SyntheticConfig(difficulty=2, num_examples=100, split="test", unique=True))
    assert len({i.key for i in unique}) == 100
    with pytest.raises(ValueError, match="space is too small"):
        synthetic.generate(SyntheticConfig(difficulty=1, num_examples=100, split="test", unique=True))


def test_instances_carry_their_pieces():
    inst = arithmetic.build((3, 4, 2, 5), ("+", "*", "-"))
    assert inst.question == "Start with 3, add 4, multiply by 2, subtract 5. What is the result?"
    assert inst.steps == ("3 + 4 = 7", "7 * 2 = 14", "14 - 5 = 9")
    assert (inst.answer, inst.target, inst.key) == ("9", 9, "arithmetic:3+4*2-5")
    with pytest.raises(ValueError, match="not a whole number"):
        arithmetic.build((7, 2), ("/",))


def test_problem_sets_are_judged_by_the_instance_verifier():
    problems = problem_set(SyntheticConfig(task="arithmetic", difficulty=3, num_examples=5, split="test"))
    assert len(problems) == 5 and all(p.kind == "verifier" and p.language == "en" for p in problems)
    assert problems[0].verifier(problems[0].answer)
    assert problems[0].id == "synthetic:arithmetic:d3:test:seed0:0"


@pytest.mark.parametrize("answer, ok", [
    ("(3 + 4) * 2", True), ("2 * (4 + 3)", True), ("(3+4)*2 = 14", True), ("2×(3+4)", True),
    ("3 + 4 * 2", False),            # 11
    ("(3 + 4) * 2 * 1", False),      # a number not given
    ("(3 + 3) * 2 + 2", False),      # 3 used twice, 4 unused
    ("14", False),                   # numbers unused
    ("(3 + 4) * 2 = 15", False),
    ("2 ** 3 + 4 + 2", False),       # ** is not allowed
    ("(4 - 4) / 0 + 3", False),
    ("__import__('os').system('true')", False),
    ("3 + 4 +", False),
    ("", False),
    ("(" * 300 + "3" + ")" * 300, False),
])
def test_countdown_verifier_edge_cases(answer, ok):
    assert countdown.check_expression(answer, (3, 4, 2), 14) is ok


def test_countdown_accepts_rational_intermediates():
    assert countdown.check_expression("(1 / 2 + 1) * 4", (1, 2, 1, 4), 6)


@pytest.mark.parametrize("text, value", [("9", 9), (" +9. ", 9), ("-3", -3), ("1,000", 1000),
                                         ("9.5", None), ("nine", None), ("1,00", None), ("", None)])
def test_parse_integer(text, value):
    assert arithmetic.parse_integer(text) == value


@pytest.mark.parametrize("kwargs, message", [
    (dict(task="chess"), "task must be one of"), (dict(difficulty=9), "difficulty"),
    (dict(split="val"), "split"), (dict(test_fraction=0.0), "test_fraction"),
    (dict(num_examples=0), "num_examples"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticConfig(**kwargs)


def test_named_sets_pick_a_difficulty_per_part_and_mix():
    from r1jax.data.sources import DataSource, load_problems

    source = DataSource(train="synthetic:arithmetic:d1+synthetic:arithmetic", difficulty=3,
                        num_train=5)
    problems = load_problems(source, "train").problems
    assert len(problems) == 10
    steps = [p.question.count(",") for p in problems]  # "Start with 4, subtract 1, add 7, ..."
    # Part 1 at d1 (one operation), part 2 at data.difficulty (three operations).
    assert steps[:5] == [1] * 5 and steps[5:] == [3] * 5
    assert all(":d1:" in p.source for p in problems[:5])
    assert all(":d3:" in p.source for p in problems[5:])
    for bad in ("synthetic:arithmetic:2", "synthetic:arithmetic:d2:x", "synthetic:arithmetic:d9"):
        with pytest.raises(ValueError, match="synthetic:arithmetic|difficulty"):
            load_problems(DataSource(train=bad, num_train=2), "train")
