"""GRPO run configs small enough for tests, on the shared tiny policy (tests/conftest.py)."""
import ml_collections
import pytest


@pytest.fixture()
def grpo_config(tiny_policy_dir):
    """A factory of GRPO run configs small enough for a test: 4 prompts × 4 samples, 12 tokens."""
    return lambda **overrides: _tiny_grpo_config(tiny_policy_dir, **overrides)


def _tiny_grpo_config(checkpoint: str, **overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(dict(
        job="grpo", name="test", steps=4, prompts_per_step=4, seed=0,
        model=dict(checkpoint=checkpoint),
        data=dict(train="synthetic:arithmetic", test="synthetic:arithmetic", difficulty=1,
                  num_train=64, num_test=8, max_prompt_tokens=192),
        rollout=dict(max_new_tokens=12),
        grpo=dict(group_size=4, loss=dict(beta=0.04), optim=dict(learning_rate=1e-3)),
        rewards=dict(num_workers=0),
        eval=dict(every=2, num_problems=4, num_samples=2, max_new_tokens=12),
        checkpoint=dict(every=2, max_to_keep=3),
        logging=dict(tensorboard=False, progress_bar=False, samples_every=2),
    ))
    config.update_from_flattened_dict(overrides)
    return config
