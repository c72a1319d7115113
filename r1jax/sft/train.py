"""Supervised fine-tuning (job ``sft``): cold start, rejection-sampling SFT and distillation.

Examples are tokenized (prompt, then response and EOS), packed into fixed-length rows with the loss
on response tokens only, and visited in a seeded order per epoch; the learning rate follows the
configured schedule (DeepSeek-R1: cosine from 5e-5 to 5e-6). The run skeleton
(``r1jax.training_run``) gives it checkpoints, exact resume, SIGTERM saves and the time budget; a
finished run is not run again (its ``summary.json`` stands).
"""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from r1jax import training_run
from r1jax.data import Sampler, SamplerState
from r1jax.metrics import EVAL_FILE, MetricsWriter
from r1jax.optim import init_train_state, make_optimizer
from r1jax.policy import ModelSource, export_policy
from r1jax.sft.config import SFTConfig
from r1jax.sft.data import load_examples
from r1jax.sft.packing import iterate_batches, pack_examples
from r1jax.sft.step import SFTBatch, eval_loss, make_sft_step
from r1jax.sharding import MeshSettings


@dataclasses.dataclass(frozen=True)
class SFTData:
    """``train``/``test``: sources for ``r1jax.sft.data.load_examples`` (JSONL paths, synthetic)."""

    train: str
    test: str | None = None
    template: str = "r1_zero"
    synthetic_count: int = 2000
    difficulty: int = 2
    seed: int = 0
    max_examples: int | None = None
    seq_len: int = 256


@dataclasses.dataclass(frozen=True)
class RunConfig:
    job: str
    model: ModelSource
    data: SFTData
    name: str = "sft"
    seed: int = 0
    sft: SFTConfig = SFTConfig()
    epochs: int = 2
    batch_rows: int = 16
    eval_every: int = 50
    checkpoint_every: int = 100
    max_to_keep: int = 2
    time_budget_s: float | None = None  # stop after this many seconds (equal-time comparisons)
    output_dir: str | None = None
    tensorboard: bool = False
    progress_bar: bool = True
    mesh: MeshSettings = MeshSettings()

    def __post_init__(self):
        if self.job != "sft":
            raise ValueError(f"job must be 'sft', got {self.job!r}")
        if self.epochs < 1 or self.batch_rows < 1:
            raise ValueError("epochs and batch_rows must be >= 1")


def _rows(tokenizer, examples, seq_len: int, source: str):
    """Packed rows, and how many examples were too long for ``seq_len`` (dropped, not cut: a cut
    example would lose the response it is there to teach)."""
    pairs = [(tokenizer.encode(p), tokenizer.encode(r, add_eos=True)) for p, r in examples]
    fitting = [(p, r) for p, r in pairs if len(p) + len(r) <= seq_len]
    if not fitting:
        longest = max(len(p) + len(r) for p, r in pairs)
        raise ValueError(f"data {source!r}: no example fits data.seq_len = {seq_len} tokens "
                         f"(the longest has {longest}); raise data.seq_len")
    rows = pack_examples(fitting, seq_len, loss_on="response", pad_id=tokenizer.pad_id)
    return rows, len(pairs) - len(fitting)


def run(cfg: RunConfig, workdir: str) -> dict:
    done = training_run.finished(workdir, cfg)
    if done is not None:
        return done
    sharding, model_cfg, params, tokenizer = training_run.start(workdir, cfg, cfg.model, cfg.mesh)
    from r1jax import run_checks  # budgets, batch shards, template: before any compile
    run_checks.check_sft(cfg, model_cfg, sharding, tokenizer)
    examples, rows, dropped, test_rows = _data(cfg, tokenizer)
    per_epoch = rows.num_rows // cfg.batch_rows
    if per_epoch < 1:
        raise ValueError(f"{len(examples)} examples pack into {rows.num_rows} rows, fewer than "
                         f"batch_rows={cfg.batch_rows}")
    steps = cfg.epochs * per_epoch
    optim = cfg.sft.optim
    if optim.schedule == "cosine":  # the decay spans the run, whatever its length turns out to be
        optim = dataclasses.replace(optim, total_steps=max(steps, optim.warmup_steps + 1))
    optimizer = make_optimizer(optim)
    sampler = Sampler(rows.num_rows, seed=cfg.seed)
    checkpointer = training_run.open_checkpoints(workdir, cfg.max_to_keep)
    start, arrays, meta = training_run.resume(
        checkpointer, {"state": init_train_state(params, optimizer)})
    state = arrays["state"]
    position = sampler.restore(meta["sampler"]) if meta else SamplerState()
    writer = MetricsWriter(workdir, tensorboard=cfg.tensorboard, resume_step=start or None)
    step_fn = make_sft_step(cfg.sft, model_cfg, optimizer, state, sharding)

    def evaluate(step):
        if test_rows is None:
            return None
        metrics = {"loss": heldout_loss(state.params, test_rows, cfg, model_cfg, tokenizer,
                                        sharding)}
        writer.write(step, metrics, EVAL_FILE, prefix="eval/")
        return metrics

    initial = evaluate(0) if start == 0 else None
    bar = training_run.progress(steps, start, cfg.name, cfg.progress_bar)
    step = start - 1
    with training_run.Stopper(cfg.time_budget_s) as stopper:
        for step in range(start, steps):
            indices, position = sampler.take(position, cfg.batch_rows)
            state, metrics = step_fn(state, SFTBatch.from_rows(_select(rows, np.asarray(indices))))
            metrics = jax.tree.map(float, metrics)
            writer.write(step + 1, {**metrics, "epoch": step // per_epoch})
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}")
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
    export = cfg.output_dir or os.path.join(workdir, "export")
    export_policy(export, model_cfg, state.params, tokenizer)
    writer.close()
    return training_run.write_summary(workdir, cfg, {
        "name": cfg.name, "examples": len(examples), "too_long": dropped, "rows": rows.num_rows,
        "steps": step + 1, "train_seconds": round(stopper.elapsed_s, 1), "initial": initial,
        "final": final, "export": export})


def _data(cfg: RunConfig, tokenizer):
    """The training examples, their packed rows, how many were too long, and the test rows."""
    d = cfg.data
    kwargs = dict(template=d.template, count=d.synthetic_count, difficulty=d.difficulty,
                  seed=d.seed)
    examples = load_examples(d.train, **kwargs)[:d.max_examples]
    rows, dropped = _rows(tokenizer, examples, d.seq_len, d.train)
    test_rows = _rows(tokenizer, load_examples(d.test, **kwargs), d.seq_len, d.test)[0] \
        if d.test else None
    return examples, rows, dropped, test_rows


def heldout_loss(params, test_rows, cfg: RunConfig, model_cfg, tokenizer, sharding) -> float:
    """The response tokens' mean negative log-likelihood over the test rows."""
    total, weight = 0.0, 0.0
    for batch in iterate_batches(test_rows, cfg.batch_rows, pad_id=tokenizer.pad_id):
        loss_sum, w = eval_loss(params, SFTBatch.from_rows(batch), model_cfg=model_cfg,
                                impl=cfg.sft.logprob_impl, sharding=sharding)
        total, weight = total + float(loss_sum), weight + float(w)
    return total / max(weight, 1.0)


def _select(rows, indices: np.ndarray):
    """The packed rows at ``indices`` (an epoch's shuffled order)."""
    return type(rows)(*(getattr(rows, f.name)[indices] for f in dataclasses.fields(rows)))
