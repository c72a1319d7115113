"""The GRPO training loop (DeepSeek-R1-Zero): sample, score, normalize within groups, update.

``run(cfg, workdir)`` reads top to bottom; each step of an iteration is a function below it:
collect (prompts → G completions each → rule-based rewards, ``r1jax.rl.collect``) → advantages
(once, ``r1jax.rl.batch``) → old/reference log-probs (``logprobs_for_update``, the one place that
decides where they come from) → ``num_iterations`` passes of ``num_minibatches`` jitted updates
→ metrics → periodic held-out evaluation → checkpoint. The run skeleton
(``r1jax.training_run``) gives it resume (bit-identical on CPU), SIGTERM saves and the time budget.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from r1jax import eval as r1eval
from r1jax import training_run
from r1jax.data import Sampler, SamplerState, get_template
from r1jax.data.sources import load_problems
from r1jax.metrics import EVAL_FILE, MetricsWriter
from r1jax.optim import init_train_state, learning_rate_schedule, make_optimizer
from r1jax.policy import export_policy
from r1jax.rewards import RewardConfig, RewardPool
from r1jax.rl import batch as batch_lib
from r1jax.rl import report
from r1jax.rl.collect import Collector, Experience, collect
from r1jax.rl.run_config import RunConfig
from r1jax.rl.step import GRPOBatch, make_grpo_step, rollout_logprobs

__all__ = ["RunConfig", "TrainingDiverged", "run"]


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite updates; resume from the last checkpoint."""


def run(cfg: RunConfig, workdir: str) -> dict:
    """Run (or resume) GRPO in ``workdir``; returns the summary."""
    done = training_run.finished(workdir, cfg)
    if done is not None:
        return done
    run_ = setup(cfg, workdir)
    checkpointer = training_run.open_checkpoints(workdir, cfg.checkpoint.max_to_keep)
    start, state, ref_params, sampler_state, best = resume(cfg, run_, checkpointer)
    sampler = run_.collector.sampler
    writer = MetricsWriter(workdir, tensorboard=cfg.logging.tensorboard,
                           resume_step=start if start else None)
    step_fn = make_grpo_step(cfg.grpo, run_.model_cfg, run_.optimizer, state, run_.sharding)
    lr = learning_rate_schedule(cfg.grpo.optim)
    key = jax.random.split(jax.random.key(cfg.seed))[0]
    initial = None
    if start == 0:
        if jax.process_index() == 0:
            print(f"[r1jax] {cfg.name}: {run_.model_cfg.model_type} "
                  f"{sum(x.size for x in jax.tree.leaves(run_.params)):,} params on "
                  f"{jax.device_count()} devices; held-out eval before training...", flush=True)
        initial = run_.held_out(0, state.params, writer, best)

    bar = training_run.progress(cfg.steps, start, cfg.name, cfg.logging.progress_bar)
    step = start - 1  # the last step done, should the loop have none left
    with training_run.Stopper(cfg.time_budget_s) as stopper:
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            # 1. Sample G completions per prompt and score them.
            exp, sampler_state = collect(run_.collector, state.params, run_.model_cfg,
                                         sampler_state, jax.random.fold_in(key, step),
                                         sharding=run_.sharding)
            t_rollout = time.perf_counter()
            # 2. Group-relative advantages (unjudged samples are invalid), then the batch.
            adv = batch_lib.advantages(exp.scored.rewards_PxG, cfg.grpo.advantage_mode,
                                       cfg.grpo.advantage_eps)
            columns = batch_lib.completion_bucket(int(exp.scored.lengths.max()),
                                                  cfg.rollout.max_new_tokens)
            batch = batch_lib.make_batch(exp.rollout, adv.advantages_PxG, columns=columns,
                                         sampler_logprobs=cfg.grpo.loss.tis_cap is not None,
                                         router_replay=cfg.grpo.router_replay)
            # 3. Old-policy and reference log-probs.
            batch, step_ref = logprobs_for_update(cfg, run_.model_cfg, batch, exp, state.params,
                                                  ref_params, run_.sharding)
            t_logprobs = time.perf_counter()
            # 4. μ passes over the minibatches.
            state, update_metrics = update(cfg, step_fn, state, batch, step_ref, step)
            if cfg.grpo.ref_update_interval and ref_params is not None and \
                    (step + 1) % cfg.grpo.ref_update_interval == 0:
                ref_params = jax.tree.map(jnp.copy, state.params)
            t_update = time.perf_counter()
            # 5. Metrics and samples.
            metrics = step_metrics(cfg, exp, adv, update_metrics, state, lr, columns)
            log_step(cfg, writer, step + 1, metrics, exp, timings={
                "rollout_s": t_rollout - t0, "logprobs_s": t_logprobs - t_rollout,
                "update_s": t_update - t_logprobs, "decode_steps": int(exp.rollout.decode_steps)})
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward']:.2f}",
                            acc=f"{metrics.get('accuracy', float('nan')):.2f}",
                            len=f"{metrics['response_length']:.0f}")
            # 6. Held-out evaluation.
            if cfg.eval.every and (step + 1) % cfg.eval.every == 0 and step + 1 < cfg.steps:
                run_.held_out(step + 1, state.params, writer, best)
            # 7. Checkpoint: on schedule, at the end, on SIGTERM or when out of time.
            stop = stopper.should_stop()
            if stop or training_run.checkpoint_due(step + 1, cfg.steps, cfg.checkpoint.every):
                checkpointer.save(step + 1, _arrays(state, ref_params),
                                  {"sampler": sampler.state_dict(sampler_state), "best": best,
                                   "seed": cfg.seed}, force=stop)
            if stop:
                break
    bar.close()
    checkpointer.close()
    try:
        if stopper.preempted:
            return {"preempted_at": step + 1}
        return wrap_up(cfg, workdir, run_, state.params, writer, best, initial,
                       steps_done=step + 1, train_seconds=stopper.elapsed_s)
    finally:
        writer.close()
        run_.pool.close()


def resume(cfg: RunConfig, run_: "Setup", checkpointer):
    """``(start step, train state, reference params, sampler state, best eval)``: from the latest
    checkpoint, or fresh (the reference is the initial policy; β = 0 has none)."""
    state = init_train_state(run_.params, run_.optimizer)
    ref_params = jax.tree.map(jnp.copy, run_.params) if cfg.grpo.loss.beta > 0 else None
    start, arrays, meta = training_run.resume(checkpointer, _arrays(state, ref_params))
    sampler_state = run_.collector.sampler.restore(meta["sampler"]) if meta else SamplerState()
    best = meta["best"] if meta else {"pass@1": -1.0, "step": -1}
    return start, arrays["state"], arrays.get("ref_params"), sampler_state, best


@dataclasses.dataclass(frozen=True)
class Setup:
    """What stays fixed through a run: the mesh, the policy it starts from, the data and rewards
    (``collector``), the held-out evaluation and the optimizer."""

    sharding: Any
    model_cfg: Any
    params: Any
    tokenizer: Any
    collector: Collector
    held_out: "HeldOut"
    optimizer: Any
    pool: RewardPool


def setup(cfg: RunConfig, workdir: str) -> Setup:
    sharding, model_cfg, params, tokenizer = training_run.start(workdir, cfg, cfg.model, cfg.mesh)
    from r1jax import run_checks  # budgets, batch shards, template: before any compile
    run_checks.check_grpo(cfg, model_cfg, sharding, tokenizer)
    train_set = load_problems(cfg.data, "train")
    test_set = load_problems(cfg.data, "test")
    template = get_template(cfg.data.template)
    reward_cfg = RewardConfig.from_mapping(
        cfg.rewards.weights, max_tokens=cfg.rewards.overlong_max_tokens,
        cache_tokens=cfg.rewards.overlong_cache_tokens, think_prefilled=template.think_prefilled)
    pool = RewardPool(cfg.rewards.num_workers, timeout_s=cfg.rewards.timeout_s)
    reward_model = None
    if cfg.rewards.reward_model:
        from r1jax.rm import RewardModelScorer

        reward_model = RewardModelScorer(cfg.rewards.reward_model, sharding=sharding)
    collector = Collector(
        train_set, Sampler(len(train_set), seed=cfg.data.seed), template, tokenizer, cfg.rollout,
        cfg.grpo.group_size, cfg.prompts_per_step, cfg.data.max_prompt_tokens, reward_cfg, pool,
        reward_model, cfg.dynamic_sampling, cfg.max_refills, cfg.grpo.router_replay)
    settings = r1eval.EvalSettings(
        template=cfg.data.template, num_samples=cfg.eval.num_samples,
        temperature=cfg.eval.temperature, top_p=cfg.eval.top_p,
        max_new_tokens=cfg.eval.max_new_tokens, batch_size=max(1, cfg.prompts_per_step),
        stop_strings=cfg.rollout.stop_strings, reward_config=reward_cfg,
        engine=cfg.rollout.engine)
    held_out = HeldOut(cfg, workdir, model_cfg, tokenizer, settings,
                       list(test_set)[:cfg.eval.num_problems],
                       jax.random.split(jax.random.key(cfg.seed))[1], sharding, pool)
    return Setup(sharding, model_cfg, params, tokenizer, collector, held_out,
                 make_optimizer(cfg.grpo.optim), pool)


def wrap_up(cfg: RunConfig, workdir: str, run_: Setup, params, writer: MetricsWriter,
            best: dict, initial: dict | None, *, steps_done: int, train_seconds: float) -> dict:
    """The final evaluation, the export, the curves and the summary."""
    final = run_.held_out(steps_done, params, writer, best)
    export_policy(os.path.join(workdir, "export"), run_.model_cfg, params, run_.tokenizer)
    summary = {"name": cfg.name, "steps": steps_done, "train_seconds": round(train_seconds, 1),
               "final": final}
    if initial is not None:
        summary["initial"] = initial
    if jax.process_index() == 0:
        report.write_markdown(workdir, cfg.name, steps_done=steps_done,
                              prompts=cfg.prompts_per_step, group_size=cfg.grpo.group_size,
                              train_seconds=train_seconds, initial=initial, final=final)
    return training_run.write_summary(workdir, cfg, summary)


def logprobs_for_update(cfg: RunConfig, model_cfg, batch: GRPOBatch, exp: Experience, params,
                        ref_params, sharding) -> tuple[GRPOBatch, Any]:
    """Where the update's old-policy and reference log-probs come from — decided here only.

    Old: the sampler's (``old_logprobs="sampler"``), a forward of the policy once per rollout when
    the batch is reused (several minibatches or iterations), or none (on-policy: ratio ≡ 1).
    Reference (β > 0): a forward once per rollout when the batch is reused, else inside the
    update (returned as the update's reference parameters). Both forwards replay the batch's
    expert choices when it has them (router replay)."""
    lp = dict(model_cfg=model_cfg, completion_length=batch.completion_length,
              temperature=cfg.grpo.temperature, impl=cfg.grpo.logprob_impl, sharding=sharding,
              experts_BxLxYxA=batch.experts_BxLxYxA)
    if cfg.grpo.old_logprobs == "sampler":
        batch = batch.replace(old_logp_BxT=exp.rollout.logprobs[:, :batch.completion_length])
    elif not cfg.grpo.on_policy:
        batch = batch.replace(old_logp_BxT=rollout_logprobs(
            params, batch.tokens_BxL, batch.attention_mask_BxL, **lp))
    updates_per_step = cfg.grpo.num_minibatches * cfg.grpo.num_iterations
    if ref_params is not None and updates_per_step > 1:
        batch = batch.replace(ref_logp_BxT=rollout_logprobs(
            ref_params, batch.tokens_BxL, batch.attention_mask_BxL, **lp))
        return batch, None
    return batch, ref_params


def update(cfg: RunConfig, step_fn, state, batch: GRPOBatch, ref_params, step: int):
    """``num_iterations`` passes over ``num_minibatches`` minibatches; the mean of their metrics."""
    rows = batch.tokens_BxL.shape[0] // cfg.grpo.num_minibatches
    metrics = []
    for _ in range(cfg.grpo.num_iterations):
        for m in range(cfg.grpo.num_minibatches):
            state, m_metrics = step_fn(state, batch.rows(m * rows, (m + 1) * rows), ref_params)
            metrics.append(m_metrics)
    if int(state.consecutive_skips) >= cfg.grpo.max_consecutive_skips:
        raise TrainingDiverged(
            f"{int(state.consecutive_skips)} consecutive updates had a non-finite loss or "
            f"gradient (step {step}); rerun the same command to resume from the last "
            "checkpoint, and consider a lower learning rate or grpo.optim.max_grad_norm")
    return state, jax.tree.map(lambda *xs: float(np.mean([float(x) for x in xs])), *metrics)


def step_metrics(cfg: RunConfig, exp: Experience, adv, update_metrics: dict, state, lr,
                 columns: int) -> dict:
    metrics = report.rollout_metrics(exp.scored, cfg.rollout.max_new_tokens)
    metrics.update(update_metrics)
    metrics.update(
        frac_zero_std=float(np.mean(np.asarray(adv.zero_std_P))), refills=exp.refills,
        skipped_updates=int(state.skipped_updates),
        learning_rate=float(lr(int(state.step) - 1)), completion_columns=columns)
    return metrics


def log_step(cfg: RunConfig, writer: MetricsWriter, step: int, metrics: dict, exp: Experience,
             timings: dict) -> None:
    if step % cfg.logging.every == 0 or step == cfg.steps:
        writer.write(step, metrics)
        writer.write(step, timings, "timing.jsonl")
    if cfg.logging.samples_every and step % cfg.logging.samples_every == 0:
        writer.samples(step, report.example_samples(exp.scored, exp.problems,
                                                    cfg.grpo.group_size, cfg.logging.num_samples))


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """The held-out evaluation of a run: ``self(step, params, writer, best)`` evaluates, logs to
    ``eval.jsonl``, prints, and (``checkpoint.keep_best``) exports a new best to ``best/``."""

    cfg: RunConfig
    workdir: str
    model_cfg: Any
    tokenizer: Any
    settings: r1eval.EvalSettings
    problems: list
    key: jax.Array
    sharding: Any
    pool: RewardPool | None

    def __call__(self, step: int, params, writer: MetricsWriter, best: dict) -> dict:
        result = r1eval.evaluate(params, self.model_cfg, self.tokenizer, self.problems,
                                 settings=self.settings, rng=jax.random.fold_in(self.key, step),
                                 sharding=self.sharding, pool=self.pool)
        metrics = dict(result.metrics)
        writer.write(step, metrics, EVAL_FILE, prefix="eval/")
        if jax.process_index() == 0:
            tqdm.write(f"[r1jax] held-out eval at step {step}: pass@1 {metrics['pass@1']:.1%}, "
                       f"format {metrics['format_rate']:.1%}, mean length "
                       f"{metrics['mean_length']:.1f} tokens ({len(self.problems)} problems × "
                       f"{self.settings.num_samples})")
        if self.cfg.checkpoint.keep_best and metrics["pass@1"] > best["pass@1"]:
            best.update({"pass@1": metrics["pass@1"], "step": step})
            export_policy(os.path.join(self.workdir, "best"), self.model_cfg, params,
                          self.tokenizer)
        return metrics


def _arrays(state, ref_params) -> dict:
    return {"state": state} if ref_params is None else {"state": state, "ref_params": ref_params}
