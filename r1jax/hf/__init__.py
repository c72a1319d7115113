"""Hugging Face checkpoints in and out: ``config.json`` plus (sharded) safetensors."""
from r1jax.hf.config_io import config_from_dict, config_to_dict, load_config
from r1jax.hf.errors import CheckpointError
from r1jax.hf.weights import load_pretrained, save_pretrained

__all__ = ["CheckpointError", "config_from_dict", "config_to_dict", "load_config",
           "load_pretrained", "save_pretrained"]
