"""Train a preference reward model (job ``reward_model``) and export it for GRPO.

Pairs come from a JSONL file or the synthetic instruction set; each epoch visits them in a seeded
order (the sampler's position is checkpointed, so a run resumes exactly). The export directory holds
the backbone in Hugging Face format, ``reward_head.safetensors`` and the tokenizer;
``r1jax.rm.RewardModelScorer`` loads it.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from safetensors.numpy import save_file
from tqdm import tqdm

from r1jax import distributed
from r1jax.checkpoint import Checkpointer, run_guard
from r1jax.configdict import ConfigError, from_config
from r1jax.data import Sampler, SamplerState
from r1jax.data.preferences import KINDS, PreferencePair, load_pairs, synthetic_pairs
from r1jax.metrics import EVAL_FILE, MetricsWriter
from r1jax.optim import OptimConfig, init_train_state, make_optimizer
from r1jax.policy import ModelSource, export_policy, load_policy
from r1jax.rm.encode import encode_pairs
from r1jax.rm.model import model_params
from r1jax.rm.step import eval_pairs, make_rm_step
from r1jax.sharding import MeshSettings, Sharding, make_mesh

HEAD_FILE = "reward_head.safetensors"


@dataclasses.dataclass(frozen=True)
class PairData:
    """``synthetic`` (the instruction set of ``r1jax.data.preferences``) or a JSONL path."""

    train: str = "synthetic"
    test: str = "synthetic"
    num_train: int = 4000
    num_test: int = 400
    seed: int = 0
    max_tokens: int = 128
    kinds: tuple[str, ...] = KINDS  # which synthetic tasks


@dataclasses.dataclass(frozen=True)
class RMRunConfig:
    job: str
    model: ModelSource
    name: str = "reward_model"
    seed: int = 0
    data: PairData = PairData()
    optim: OptimConfig = OptimConfig(learning_rate=1e-4, warmup_steps=10)
    epochs: int = 1
    batch_pairs: int = 32
    num_microbatches: int = 1
    eval_every: int = 50
    checkpoint_every: int = 100
    tensorboard: bool = False
    progress_bar: bool = True
    mesh: MeshSettings = MeshSettings()

    def __post_init__(self):
        if self.job != "reward_model":
            raise ValueError(f"job must be 'reward_model', got {self.job!r}")
        if self.batch_pairs % self.num_microbatches:
            raise ValueError(f"batch_pairs ({self.batch_pairs}) must be a multiple of "
                             f"num_microbatches ({self.num_microbatches})")


def _pairs(data: PairData, split: str) -> list[PreferencePair]:
    name = data.train if split == "train" else data.test
    count = data.num_train if split == "train" else data.num_test
    if name == "synthetic":
        return synthetic_pairs(count, seed=data.seed, split=split, kinds=data.kinds)
    return load_pairs(name)[:count]


def run(config, workdir: str) -> dict:
    try:
        cfg = from_config(RMRunConfig, config)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    sharding = Sharding(make_mesh(dataclasses.asdict(cfg.mesh)))
    model_cfg, backbone, tokenizer = load_policy(cfg.model, sharding)
    train, test = _pairs(cfg.data, "train"), _pairs(cfg.data, "test")
    test_batch = encode_pairs(tokenizer, test, cfg.data.max_tokens)
    optimizer = make_optimizer(cfg.optim)
    state = init_train_state(model_params(backbone, model_cfg), optimizer)
    sampler, position = Sampler(len(train), seed=cfg.seed), SamplerState()
    steps = cfg.epochs * (len(train) // cfg.batch_pairs)
    if steps < 1:
        raise ValueError(f"{len(train)} pairs make no batch of batch_pairs={cfg.batch_pairs}")

    run_guard(workdir, cfg)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=2)
    start = checkpointer.latest_step() or 0
    if start:
        arrays, meta = checkpointer.restore(start, {"state": state})
        state, position = arrays["state"], sampler.restore(meta["sampler"])
    writer = MetricsWriter(workdir, tensorboard=cfg.tensorboard, resume_step=start or None)
    step_fn = make_rm_step(model_cfg, optimizer, cfg.num_microbatches, sharding)

    def evaluate(step):
        loss, accuracy = eval_pairs(state.params, test_batch, model_cfg=model_cfg,
                                    sharding=sharding)
        metrics = {"loss": float(loss), "accuracy": float(accuracy)}
        writer.write(step, metrics, EVAL_FILE, prefix="eval/")
        return metrics

    initial = evaluate(0) if start == 0 else None
    bar = tqdm(total=steps, initial=start, desc=cfg.name,
               disable=not (cfg.progress_bar and distributed.is_main_process()))
    for step in range(start, steps):
        indices, position = sampler.take(position, cfg.batch_pairs)
        batch = encode_pairs(tokenizer, [train[int(i)] for i in indices], cfg.data.max_tokens)
        state, metrics = step_fn(state, batch)
        writer.write(step + 1, jax.tree.map(float, metrics))
        bar.update(1)
        bar.set_postfix(loss=f"{float(metrics['loss']):.3f}",
                        acc=f"{float(metrics['accuracy']):.2f}")
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < steps:
            evaluate(step + 1)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == steps:
            checkpointer.save(step + 1, {"state": state},
                              {"sampler": sampler.state_dict(position)})
    bar.close()
    checkpointer.close()
    final = evaluate(steps)
    export = os.path.join(workdir, "export")
    export_reward_model(export, model_cfg, state.params, tokenizer)
    writer.close()
    return {"name": cfg.name, "initial": initial, "final": final, "export": export}


def export_reward_model(path: str, model_cfg, params, tokenizer) -> None:
    export_policy(path, model_cfg, params["backbone"], tokenizer)
    if jax.process_index() == 0:
        head = {k: np.asarray(jax.device_get(v), np.float32).reshape(np.shape(v))
                for k, v in params["head"].items()}
        save_file(head, os.path.join(path, HEAD_FILE))
