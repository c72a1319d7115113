"""Preference reward models: a scalar head on the decoder, trained with the Bradley–Terry loss,
scoring general prompts in GRPO (DeepSeek-R1's final RL stage)."""
from r1jax.rm.model import bradley_terry_loss, init_head, model_params, scores
from r1jax.rm.scorer import RewardModelScorer
from r1jax.rm.step import PairBatch, make_rm_step, rm_step
from r1jax.rm.train import export_reward_model

__all__ = ["PairBatch", "RewardModelScorer", "bradley_terry_loss", "export_reward_model",
           "init_head", "make_rm_step", "model_params", "rm_step", "scores"]
