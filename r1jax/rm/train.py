"""Train a preference reward model (job ``reward_model``) and export it for GRPO.

Pairs come from a JSONL file or the synthetic instruction set; each epoch visits them in a seeded
order (the sampler's position is checkpointed, so a run resumes exactly; the run skeleton,
``r1jax.training_run``, gives it SIGTERM saves and finished-run detection). The export directory holds
the backbone in Hugging Face format, ``reward_head.safetensors`` and the tokenizer;
``r1jax.rm.RewardModelScorer`` loads it.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from safetensors.numpy import save_file

from r1jax import distributed, training_run
from r1jax.data import Sampler, SamplerState
from r1jax.data.preferences import KINDS, PreferencePair, load_pairs, synthetic_pairs
from r1jax.metrics import EVAL_FILE, MetricsWriter
from r1jax.optim import OptimConfig, init_train_state, make_optimizer
from r1jax.policy import ModelSource, export_policy
from r1jax.rm.encode import encode_pairs
from r1jax.rm.model import model_params
from r1jax.rm.step import eval_pairs, make_rm_step
from r1jax.sharding import MeshSettings

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
class RunConfig:
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
    max_to_keep: int = 2
    time_budget_s: float | None = None
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


def run(cfg: RunConfig, workdir: str) -> dict:
    done = training_run.finished(workdir, cfg)
    if done is not None:
        return done
    sharding, model_cfg, backbone, tokenizer = training_run.start(workdir, cfg, cfg.model,
                                                                  cfg.mesh)
    from r1jax import run_checks  # budgets, batch shards, template: before any compile
    run_checks.check_reward_model(cfg, model_cfg, sharding, tokenizer)
    train, test = _pairs(cfg.data, "train"), _pairs(cfg.data, "test")
    test_batch = encode_pairs(tokenizer, test, cfg.data.max_tokens)
    optimizer = make_optimizer(cfg.optim)
    sampler = Sampler(len(train), seed=cfg.seed)
    steps = cfg.epochs * (len(train) // cfg.batch_pairs)
    if steps < 1:
        raise ValueError(f"{len(train)} pairs make no batch of batch_pairs={cfg.batch_pairs}")
    checkpointer = training_run.open_checkpoints(workdir, cfg.max_to_keep)
    start, arrays, meta = training_run.resume(
        checkpointer, {"state": init_train_state(model_params(backbone, model_cfg), optimizer)})
    state = arrays["state"]
    position = sampler.restore(meta["sampler"]) if meta else SamplerState()
    writer = MetricsWriter(workdir, tensorboard=cfg.tensorboard, resume_step=start or None)
    step_fn = make_rm_step(model_cfg, optimizer, cfg.num_microbatches, sharding)

    def evaluate(step):
        loss, accuracy = eval_pairs(state.params, test_batch, model_cfg=model_cfg,
                                    sharding=sharding)
        metrics = {"loss": float(loss), "accuracy": float(accuracy)}
        writer.write(step, metrics, EVAL_FILE, prefix="eval/")
        return metrics

    initial = evaluate(0) if start == 0 else None
    bar = training_run.progress(steps, start, cfg.name, cfg.progress_bar)
    step = start - 1
    with training_run.Stopper(cfg.time_budget_s) as stopper:
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
            stop = stopper.should_stop()
            if stop or training_run.checkpoint_due(step + 1, steps, cfg.checkpoint_every):
                checkpointer.save(step + 1, {"state": state},
                                  {"sampler": sampler.state_dict(position)}, force=stop)
            if stop:
                break
    bar.close()
    checkpointer.close()
    if stopper.preempted:
        writer.close()
        return {"preempted_at": step + 1}
    final = evaluate(step + 1)
    export = os.path.join(workdir, "export")
    export_reward_model(export, model_cfg, state.params, tokenizer)
    writer.close()
    return training_run.write_summary(workdir, cfg, {
        "name": cfg.name, "steps": step + 1, "train_seconds": round(stopper.elapsed_s, 1),
        "initial": initial, "final": final, "export": export})


def export_reward_model(path: str, model_cfg, params, tokenizer) -> None:
    export_policy(path, model_cfg, params["backbone"], tokenizer)
    head = {k: np.asarray(distributed.to_host(v), np.float32).reshape(np.shape(v))
            for k, v in params["head"].items()}  # every process: a sharded head is gathered
    if jax.process_index() == 0:
        save_file(head, os.path.join(path, HEAD_FILE))
