"""One GRPO step of r1jax on exactly the work of each peer harness, split into its phases.

    python benchmarks/grpo_step.py --side trl      # r1jax on the TRL harness's work
    python benchmarks/grpo_step.py --side tunix    # r1jax on the Tunix harness's work
    python benchmarks/run_peers.py                 # peers and r1jax alternately, one table

Per step, as the peers do it: sample G completions per prompt (EOS disabled: every completion
has exactly the budget), score them on the host (reward = fraction of digits), group-relative
advantages, the reference model's per-token log-probs (β > 0), and one AdamW update on the whole
batch (on-policy, μ = 1: the ratio is 1 and no old-policy forward is needed). Seconds per step
are medians over ``--steps`` steps after ``--warmup`` steps, split into

  rollout   ``rollout.generate`` until the tokens are on the host
  host      rewards + advantages + building the batch (host work, and the advantage kernel)
  ref       the reference log-probs (``rl.rollout_logprobs``; with ``--ref inside`` they are
            computed inside the update instead, and the ``update`` column holds both)
  update    ``grpo_step``: policy forward + backward + AdamW, until the new parameters exist

The works (``../shared/peers/README.md``):
* ``trl``: the peer's tiny Qwen2 (same safetensors weights through ``r1jax.hf``); 8 prompts × G 4
  = 32 sequences; 16-token prompts (random word ids); 32 new tokens, T = 1; reward = fraction of
  digit tokens (ids 2..11); advantage (r - mean) / (std_unbiased + 1e-4); TRL's default loss
  (token sum over the batch / tokens = "token-mean"), β 0.04 with k3; AdamW lr 1e-6,
  betas (0.9, 0.999), eps 1e-8, no weight decay, grad-norm clip 1.0.
* ``tunix``: Qwen3 block (426,752 parameters, random init); 4 prompts × G 4 = 16 sequences;
  byte tokens with BOS, left-padded to 32; 32 new tokens, T = 1, top-p 1; reward = fraction of
  digit characters of the decoded completion; advantage (r - mean) / (std_unbiased + 1e-6);
  β 0.04 with k1; ε 0.2; "sequence-mean-token-mean"; AdamW lr 1e-5, b2 0.99, weight decay 0.1.

Model FLOPs per step use the 2·N·tokens rule per forward (6·N·tokens for forward + backward) with
N the parameters that multiply activations (everything but the embedding lookup; the LM head
counts), tokens as each phase processes them; MFU divides them by the measured step time and the
matmul peak that ``--side peak`` measures on this CPU.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_runs  # noqa: E402
import rollout as rollout_bench  # noqa: E402

TRL_WORK = dict(prompts=8, group=4, prompt_len=16, new=32, beta=0.04)
TUNIX_WORK = dict(prompts=4, group=4, prompt_len=32, new=32, beta=0.04)
DIGIT_IDS = range(2, 12)  # "0".."9" in the tiny Qwen2's word-level vocabulary
PHASES = ("step", "rollout", "host", "ref", "update")


def _work(name: str):
    """(model_cfg, params, prompt_fn(step) -> token lists, reward_fn(tokens, lengths) -> [B],
    GRPOConfig, generate kwargs, work dict)."""
    import jax
    import numpy as np

    from r1jax import hf, models, rl

    if name == "trl":
        w = TRL_WORK
        cfg, params = hf.load_pretrained(peer_runs.ensure_tiny_qwen2())
        rng = np.random.default_rng(0)

        def prompts(step):
            return rng.integers(2, cfg.vocab_size, (w["prompts"], w["prompt_len"])).tolist()

        def rewards(tokens, lengths):
            digits = (tokens >= DIGIT_IDS.start) & (tokens < DIGIT_IDS.stop)
            mask = np.arange(tokens.shape[1])[None] < lengths[:, None]
            return (digits & mask).sum(1) / np.maximum(lengths, 1)

        grpo = rl.GRPOConfig(
            loss=rl.LossConfig(epsilon_low=0.2, epsilon_high=0.2, beta=w["beta"],
                               kl_estimator="k3", loss_agg="token-mean"),
            optim=rl.OptimConfig(learning_rate=1e-6, b1=0.9, b2=0.999, eps=1e-8,
                                 weight_decay=0.0, max_grad_norm=1.0),
            group_size=w["group"], advantage_mode="grpo", advantage_eps=1e-4)
        gen = dict(pad_id=0)
        return cfg, params, prompts, rewards, grpo, gen, w

    w = TUNIX_WORK
    cfg = rollout_bench.tunix_model_config()
    params = models.init(cfg, jax.random.key(0))
    tok = rollout_bench.ByteTokenizer()

    def prompts(step):
        texts = [rollout_bench.TUNIX_PROMPTS[(step * w["prompts"] + p)
                                             % len(rollout_bench.TUNIX_PROMPTS)]
                 for p in range(w["prompts"])]
        return [[rollout_bench.BOS] + tok.encode(t) for t in texts]

    def rewards(tokens, lengths):
        texts = [tok.decode(t[:n]) for t, n in zip(tokens, lengths)]
        return np.array([sum(c.isdigit() for c in t) / max(len(t), 1) for t in texts])

    grpo = rl.GRPOConfig(
        loss=rl.LossConfig(epsilon_low=0.2, epsilon_high=0.2, beta=w["beta"], kl_estimator="k1",
                           loss_agg="seq-mean-token-mean"),
        optim=rl.OptimConfig(learning_rate=1e-5, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.1,
                             max_grad_norm=None),
        group_size=w["group"], advantage_mode="grpo", advantage_eps=1e-6)
    gen = dict(pad_id=rollout_bench.PAD, prompt_buckets=(w["prompt_len"],))
    return cfg, params, prompts, rewards, grpo, gen, w


def matmul_params(cfg) -> int:
    """Parameters that multiply activations: all but the embedding table (unless it is the head)."""
    from r1jax import models

    total = models.count_params(cfg)
    return total if cfg.tie_embeddings else total - cfg.vocab_size * cfg.hidden_size


def model_flops(cfg, w) -> dict:
    """Per-step model FLOPs of each phase (2·N per token forward, 6·N forward + backward)."""
    n = matmul_params(cfg)
    rows = w["prompts"] * w["group"]
    train_tokens = rows * (w["prompt_len"] + w["new"] - 1)
    rollout = 2 * n * (w["prompts"] * w["prompt_len"] + rows * (w["new"] - 1))
    return dict(rollout=rollout, ref=2 * n * train_tokens, update=6 * n * train_tokens)


def side_grpo(work: str, steps: int, warmup: int, ref_mode: str, scan_unroll: int = 0) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from r1jax import rl, rollout
    from r1jax.rl import batch as batching

    cfg, params, prompts_of, rewards_of, grpo, gen, w = _work(work)
    # Unrolled layers: on CPU a scanned layer stack slices (copies) its weights at every layer.
    cfg = cfg.replace(scan_unroll=scan_unroll or cfg.num_layers)
    optimizer = rl.make_optimizer(grpo.optim)
    state = rl.init_train_state(params, optimizer)
    ref_params = jax.tree.map(jnp.copy, params)
    step_fn = rl.make_grpo_step(grpo, cfg, optimizer, state)
    key = jax.random.key(0)
    times = {p: [] for p in PHASES}
    contention = None
    for step in range(warmup + steps):
        if step == warmup:
            contention = peer_runs.Contention()
        t0 = time.perf_counter()
        out = rollout.generate(state.params, cfg, prompts_of(step), rng=jax.random.fold_in(key, step),
                               max_new_tokens=w["new"], group_size=w["group"], temperature=1.0,
                               top_p=1.0, top_k=0, **gen)
        tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
        t1 = time.perf_counter()
        rewards_PxG = np.asarray(rewards_of(tokens, lengths), np.float64).reshape(-1, w["group"])
        adv = batching.advantages(rewards_PxG, grpo.advantage_mode, grpo.advantage_eps)
        batch = batching.make_batch(out, adv.advantages_PxG, columns=w["new"])
        jax.block_until_ready(batch)
        t2 = time.perf_counter()
        if ref_mode == "separate":
            ref = rl.rollout_logprobs(ref_params, batch.tokens_BxL, batch.attention_mask_BxL,
                                      model_cfg=cfg, completion_length=w["new"],
                                      temperature=grpo.temperature)
            batch = batch.replace(ref_logp_BxT=jax.block_until_ready(ref))
        t3 = time.perf_counter()
        state, metrics = step_fn(state, batch, ref_params if ref_mode == "inside" else None)
        jax.block_until_ready((state.params, metrics["loss"]))
        t4 = time.perf_counter()
        assert lengths.min() == w["new"] and int(state.skipped_updates) == 0
        for name, dt in zip(PHASES, (t4 - t0, t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[name].append(dt)
    res = {f"{p}_s": statistics.median(times[p][warmup:]) for p in PHASES}
    res.update(others_cores=contention.others_cores(), own_cores=contention.own_cores(),
               steps=steps, warmup=warmup, ref_mode=ref_mode, scan_unroll=cfg.scan_unroll,
               loss=float(metrics["loss"]),
               reward=float(rewards_PxG.mean()), first_step_s=times["step"][0],
               params=int(sum(x.size for x in jax.tree.leaves(params))),
               matmul_params=matmul_params(cfg))
    flops = model_flops(cfg, w)
    res["model_flops"] = sum(flops.values())
    res.update({f"{k}_flops": v for k, v in flops.items()})
    res["rollout_tokens_per_s"] = w["prompts"] * w["group"] * w["new"] / res["rollout_s"]
    return res


def side_peak(size: int = 2048, reps: int = 8) -> dict:
    """This CPU's f32 matmul peak as XLA reaches it (best of ``reps`` ``size``³ products)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    f = jax.jit(jnp.dot)
    jax.block_until_ready(f(a, b))
    best = min(_time_once(lambda: jax.block_until_ready(f(a, b))) for _ in range(reps))
    return dict(peak_flops=2 * size**3 / best, size=size, backend="XLA:CPU f32")


def _time_once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--side", choices=["trl", "tunix", "peak"], required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--ref", choices=["separate", "inside"], default="separate",
                   help="reference log-probs as their own program, or inside the update")
    p.add_argument("--malloc", choices=["tuned", "default"], default="tuned",
                   help="keep XLA's temporary buffers in the heap (peer_runs.tune_malloc)")
    p.add_argument("--scan-unroll", type=int, default=0,
                   help="ModelConfig.scan_unroll (0: all layers; the HF loader's default is 1)")
    args = p.parse_args()
    if args.malloc == "tuned":
        peer_runs.tune_malloc()
    if args.side == "peak":
        peer_runs.emit(side_peak())
    else:
        peer_runs.emit(side_grpo(args.side, args.steps, args.warmup, args.ref, args.scan_unroll))


if __name__ == "__main__":
    main()
