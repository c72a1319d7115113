"""The GRPO training loop (DeepSeek-R1-Zero): sample, score, normalize within groups, update.

Each iteration: draw prompts → ``rollout.generate`` G completions each → rule-based rewards on
the host → group-relative advantages → (old/reference log-probs) → ``num_iterations`` passes of
``num_minibatches`` jitted updates → metrics, periodic held-out evaluation, checkpoint. A run
resumes from its work directory exactly where it stopped (bit-identical on CPU); SIGTERM saves
and exits.
"""
from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from r1jax import distributed, rollout
from r1jax import eval as r1eval
from r1jax.checkpoint import Checkpointer, Preemption, run_guard
from r1jax.configdict import to_dict
from r1jax.data import Sampler, SamplerState, get_template
from r1jax.data.sources import load_problems
from r1jax.metrics import EVAL_FILE, MetricsWriter, markdown_table, plot_curves
from r1jax.optim import init_train_state, learning_rate_schedule, make_optimizer
from r1jax.policy import export_policy, load_policy
from r1jax.rewards.combine import RewardConfig
from r1jax.rewards.pool import RewardPool
from r1jax.rl import batching
from r1jax.rl.run_config import GRPORunConfig
from r1jax.rl.step import make_grpo_step, rollout_logprobs
from r1jax.sharding import Sharding, make_mesh


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite updates; resume from the last checkpoint."""


def train(cfg: GRPORunConfig, workdir: str) -> dict:
    """Run (or resume) GRPO in ``workdir``; returns the final summary."""
    # ---------------------------------------------------------------- setup
    distributed.initialize(cfg.distributed)
    sharding = Sharding(make_mesh(dataclasses.asdict(cfg.mesh)))
    model_cfg, params, tokenizer = load_policy(cfg.model, sharding)
    train_set, test_set = load_problems(cfg.data, "train"), load_problems(cfg.data, "test")
    template = get_template(cfg.data.template)
    reward_cfg = RewardConfig.from_mapping(
        cfg.rewards.weights, max_tokens=cfg.rewards.overlong_max_tokens,
        cache_tokens=cfg.rewards.overlong_cache_tokens, think_prefilled=template.think_prefilled)
    eval_settings = r1eval.EvalSettings(
        template=cfg.data.template, num_samples=cfg.eval.num_samples,
        temperature=cfg.eval.temperature, top_p=cfg.eval.top_p,
        max_new_tokens=cfg.eval.max_new_tokens, batch_size=max(1, cfg.prompts_per_step),
        stop_strings=cfg.rollout.stop_strings, reward_config=reward_cfg)
    eval_problems = list(test_set)[:cfg.eval.num_problems]
    optimizer = make_optimizer(cfg.grpo.optim)
    state = init_train_state(params, optimizer)
    # The reference starts as the initial policy; β = 0 skips it entirely.
    ref_params = jax.tree.map(jnp.copy, params) if cfg.grpo.loss.beta > 0 else None
    sampler, sampler_state = Sampler(len(train_set), seed=cfg.data.seed), SamplerState()
    key, eval_key = jax.random.split(jax.random.key(cfg.seed))
    stop_ids = [tokenizer.eos_id] if tokenizer.eos_id is not None else []

    run_guard(workdir, cfg)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                                max_to_keep=cfg.checkpoint.max_to_keep)
    start, best = 0, {"pass@1": -1.0, "step": -1}
    if checkpointer.latest_step() is not None:
        start = checkpointer.latest_step()
        arrays, meta = checkpointer.restore(start, _checkpoint_arrays(state, ref_params))
        state, ref_params = arrays["state"], arrays.get("ref_params")
        sampler_state, best = sampler.restore(meta["sampler"]), meta["best"]
    writer = MetricsWriter(workdir, tensorboard=cfg.logging.tensorboard,
                           resume_step=start if start else None)
    step_fn = make_grpo_step(cfg.grpo, model_cfg, optimizer, state, sharding)
    lr = learning_rate_schedule(cfg.grpo.optim)
    pool = RewardPool(cfg.rewards.num_workers, timeout_s=cfg.rewards.timeout_s)
    reward_model = None
    if cfg.rewards.reward_model:
        from r1jax.rm import RewardModelScorer

        reward_model = RewardModelScorer(cfg.rewards.reward_model, sharding=sharding)
    updates_per_step = cfg.grpo.num_minibatches * cfg.grpo.num_iterations

    def evaluate(step: int, params) -> dict:
        result = r1eval.evaluate(params, model_cfg, tokenizer, eval_problems,
                                 settings=eval_settings, rng=jax.random.fold_in(eval_key, step),
                                 sharding=sharding, pool=pool)
        metrics = dict(result.metrics)
        writer.write(step, metrics, EVAL_FILE, prefix="eval/")
        if distributed.is_main_process():
            tqdm.write(f"[r1jax] held-out eval at step {step}: pass@1 {metrics['pass@1']:.1%}, "
                       f"format {metrics['format_rate']:.1%}, mean length "
                       f"{metrics['mean_length']:.1f} tokens ({len(eval_problems)} problems × "
                       f"{eval_settings.num_samples})")
        if cfg.checkpoint.keep_best and metrics["pass@1"] > best["pass@1"]:
            best.update({"pass@1": metrics["pass@1"], "step": step})
            export_policy(os.path.join(workdir, "best"), model_cfg, params, tokenizer)
        return metrics

    def collect(step_key, sampler_state):
        """Prompts → completions → rewards; DAPO refills all-equal groups with new prompts."""
        parts, informative, refills = [], [], 0
        while True:
            count = cfg.prompts_per_step - (len(informative) if cfg.dynamic_sampling else 0)
            indices, sampler_state = sampler.take(sampler_state, count)
            problems = [train_set[int(i)] for i in indices]
            prompts = batching.encode_prompts(tokenizer, template, problems,
                                              cfg.data.max_prompt_tokens)
            out = rollout.generate(
                state.params, model_cfg, prompts, rng=jax.random.fold_in(step_key, refills),
                max_new_tokens=cfg.rollout.max_new_tokens, group_size=cfg.grpo.group_size,
                temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                top_k=cfg.rollout.top_k, stop_ids=stop_ids, stop_strings=cfg.rollout.stop_strings,
                tokenizer=tokenizer, pad_id=tokenizer.pad_id, sharding=sharding)
            scored = batching.score(out, problems, tokenizer, reward_cfg, pool, reward_model)
            parts.append((out, scored, problems))
            zero_std = np.asarray(batching.advantages(
                scored.rewards_PxG, cfg.grpo.advantage_mode, cfg.grpo.advantage_eps).zero_std_P)
            informative += [(len(parts) - 1, g) for g in np.nonzero(~zero_std)[0]]
            if (not cfg.dynamic_sampling or len(informative) >= cfg.prompts_per_step
                    or refills >= cfg.max_refills):
                break
            refills += 1
        if not cfg.dynamic_sampling:
            return parts[0], sampler_state, 0
        # Fill any shortfall with the all-equal groups (their advantages are 0).
        rest = [(p, g) for p, (_, s, _) in enumerate(parts) for g in range(len(s.rewards_PxG))
                if (p, g) not in set(informative)]
        picks = (informative + rest)[:cfg.prompts_per_step]
        return batching.take_groups(parts, picks), sampler_state, refills

    if start == 0 and jax.process_index() == 0:
        print(f"[r1jax] {cfg.name}: {model_cfg.model_type} {sum(x.size for x in jax.tree.leaves(params)):,} "
              f"params on {jax.device_count()} devices; held-out eval before training...",
              flush=True)
    initial = evaluate(0, state.params) if start == 0 else None

    # ---------------------------------------------------------------- training loop
    bar = tqdm(total=cfg.steps, initial=start, desc=cfg.name, dynamic_ncols=True,
               disable=not (cfg.logging.progress_bar and distributed.is_main_process()))
    preempted, out_of_time, loop_start = False, False, time.perf_counter()
    step = start - 1  # the last step done, should the loop have none left
    with Preemption() as preemption:
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            step_key = jax.random.fold_in(key, step)

            # 1. Sample G completions per prompt and score them.
            (out, scored, problems), sampler_state, refills = collect(step_key, sampler_state)
            t_rollout = time.perf_counter()

            # 2. Group-relative advantages; unjudged samples are invalid.
            adv = batching.advantages(scored.rewards_PxG, cfg.grpo.advantage_mode,
                                      cfg.grpo.advantage_eps)
            columns = batching.completion_bucket(int(scored.lengths.max()),
                                                 cfg.rollout.max_new_tokens)
            batch = batching.make_batch(out, adv.advantages_PxG, columns=columns,
                                        sampler_logprobs=cfg.grpo.loss.tis_cap is not None)

            # 3. Old-policy and reference log-probs, once per rollout when the batch is reused.
            lp_kwargs = dict(model_cfg=model_cfg, completion_length=columns,
                             temperature=cfg.grpo.temperature, impl=cfg.grpo.logprob_impl,
                             sharding=sharding)
            if cfg.grpo.old_logprobs == "sampler":
                batch = batch.replace(old_logp_BxT=out.logprobs[:, :columns])
            elif not cfg.grpo.on_policy:
                batch = batch.replace(old_logp_BxT=rollout_logprobs(
                    state.params, batch.tokens_BxL, batch.attention_mask_BxL, **lp_kwargs))
            step_ref = ref_params
            if ref_params is not None and updates_per_step > 1:
                batch = batch.replace(ref_logp_BxT=rollout_logprobs(
                    ref_params, batch.tokens_BxL, batch.attention_mask_BxL, **lp_kwargs))
                step_ref = None
            t_logprobs = time.perf_counter()

            # 4. μ passes over the minibatches.
            rows = batch.tokens_BxL.shape[0] // cfg.grpo.num_minibatches
            step_metrics = []
            for _ in range(cfg.grpo.num_iterations):
                for m in range(cfg.grpo.num_minibatches):
                    state, m_metrics = step_fn(state, batch.rows(m * rows, (m + 1) * rows),
                                               step_ref)
                    step_metrics.append(m_metrics)
            step_metrics = jax.tree.map(lambda *xs: float(np.mean([float(x) for x in xs])),
                                        *step_metrics)
            if int(state.consecutive_skips) >= cfg.grpo.max_consecutive_skips:
                raise TrainingDiverged(
                    f"{int(state.consecutive_skips)} consecutive updates had a non-finite loss or "
                    f"gradient (step {step}); rerun the same command to resume from the last "
                    "checkpoint, and consider a lower learning rate or grpo.optim.max_grad_norm")
            if cfg.grpo.ref_update_interval and ref_params is not None and \
                    (step + 1) % cfg.grpo.ref_update_interval == 0:
                ref_params = jax.tree.map(jnp.copy, state.params)
            t_update = time.perf_counter()

            # 5. Metrics, samples, evaluation, checkpoint.
            metrics = batching.rollout_metrics(scored, cfg.rollout.max_new_tokens)
            metrics.update(step_metrics)
            metrics.update(
                frac_zero_std=float(np.mean(np.asarray(adv.zero_std_P))), refills=refills,
                skipped_updates=int(state.skipped_updates),
                learning_rate=float(lr(int(state.step) - 1)),
                completion_columns=columns)
            if (step + 1) % cfg.logging.every == 0 or step + 1 == cfg.steps:
                writer.write(step + 1, metrics)
                writer.write(step + 1, {"rollout_s": t_rollout - t0,
                                        "logprobs_s": t_logprobs - t_rollout,
                                        "update_s": t_update - t_logprobs,
                                        "decode_steps": int(out.decode_steps)}, "timing.jsonl")
            if cfg.logging.samples_every and (step + 1) % cfg.logging.samples_every == 0:
                writer.samples(step + 1, [
                    {"question": problems[i // cfg.grpo.group_size].question,
                     "completion": scored.texts[i], "reward": _float(scored.rewards_PxG.flat[i])}
                    for i in range(0, len(scored.texts), cfg.grpo.group_size)
                ][:cfg.logging.num_samples])
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward']:.2f}",
                            acc=f"{metrics.get('accuracy', float('nan')):.2f}",
                            len=f"{metrics['response_length']:.0f}")
            if cfg.eval.every and (step + 1) % cfg.eval.every == 0 and step + 1 < cfg.steps:
                evaluate(step + 1, state.params)
            preempted = preemption.requested.is_set()
            out_of_time = bool(cfg.time_budget_s) and \
                time.perf_counter() - loop_start >= cfg.time_budget_s
            last = step + 1 == cfg.steps or out_of_time
            if (step + 1) % cfg.checkpoint.every == 0 or preempted or last:
                checkpointer.save(step + 1, _checkpoint_arrays(state, ref_params),
                                  {"sampler": sampler.state_dict(sampler_state), "best": best,
                                   "seed": cfg.seed}, force=preempted or out_of_time)
            if preempted or out_of_time:
                break
    bar.close()
    checkpointer.close()

    # ---------------------------------------------------------------- wrap up
    if preempted:
        writer.close()
        pool.close()
        return {"preempted_at": step + 1}
    final = evaluate(step + 1, state.params)
    export_policy(os.path.join(workdir, "export"), model_cfg, state.params, tokenizer)
    summary = _summary(cfg, workdir, initial, final, steps_done=step + 1,
                       train_seconds=time.perf_counter() - loop_start)
    writer.close()
    pool.close()
    return summary


def _checkpoint_arrays(state, ref_params) -> dict:
    return {"state": state} if ref_params is None else {"state": state, "ref_params": ref_params}


def _float(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else x


def _summary(cfg: GRPORunConfig, workdir: str, initial: dict | None, final: dict, *,
             steps_done: int, train_seconds: float) -> dict:
    """The PNG of the run's curves and a markdown summary, written by process 0."""
    summary = {"name": cfg.name, "steps": steps_done, "train_seconds": round(train_seconds, 1),
               "final": final}
    if initial is not None:
        summary["initial"] = initial
    if not distributed.is_main_process():
        return summary
    plot_curves(workdir, os.path.join(workdir, "curves.png"), title=cfg.name)
    keys = ["pass@1", "format_rate", "mean_length", "truncation_rate"]
    rows = [[k, initial.get(k, float("nan")) if initial else "(resumed)", final.get(k)]
            for k in keys]
    text = (f"# {cfg.name}\n\n{steps_done} GRPO steps, {cfg.prompts_per_step} prompts × "
            f"{cfg.grpo.group_size} samples per step, {train_seconds:.0f} s.\n\n"
            + markdown_table(["held-out metric", "before RL", "after RL"], rows)
            + "\n![curves](curves.png)\n")
    with open(os.path.join(workdir, "summary.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text.split("![curves]")[0].rstrip() + f"\n\nWritten to {workdir}: summary.md, curves.png, "
          "metrics.jsonl, eval.jsonl, export/", flush=True)
    import json

    with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump({**summary, "config": to_dict(cfg)}, f, indent=2, default=str)
    return summary
