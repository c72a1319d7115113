"""Rollout throughput: r1jax's engines beside Hugging Face ``generate``, Tunix's sampler and vLLM.

    python benchmarks/rollout.py                  # every comparison, 3 alternating rounds each
    python benchmarks/rollout.py --rounds 5 --only hf
    python benchmarks/rollout.py --only longtail  # lockstep vs paged on a geometric long tail
    python benchmarks/rollout.py --only vllm      # vLLM vs lockstep vs paged, log-normal budgets
    python benchmarks/rollout.py --side r1jax-hf  # one side alone (prints a RESULT line)
    python benchmarks/rollout.py --side r1jax-longtail-paged --slots 16

Five works, each run by its sides in the same run, alternating A B A B … in fresh processes,
each after waiting for an idle machine (``../shared/peers/wait_idle.sh``):

* **HF work**: the peer's tiny Qwen2 (``../shared/peers/make_tiny_model.py``: 2 layers, d 128,
  vocab 512, tied head), the *same safetensors weights* loaded by r1jax through ``r1jax.hf``;
  batch 32, 16-token prompts, 128 new tokens, sampling at T = 1 (no top-k/top-p), EOS disabled,
  KV cache. Hugging Face runs the peer's own ``hf_generate_bench.py`` (torch CPU, 2 threads).
* **Tunix work** (``tunix_grpo_bench.py``'s rollout): a Qwen3-block model (2 layers, d 128, MLP 256,
  4×32 q heads, 2 kv heads, vocab 512, untied head), random init; 4 prompts × G 4 = 16
  sequences, byte tokens with BOS, left-padded to 32, 32 new tokens, KV cache 64, T = 1, top-p 1,
  EOS unreachable. Both sides start from prompt strings and end with completion strings.
* **HF work, paged** (``--only hf-paged``): the HF work by r1jax's two engines, lockstep and paged
  (``engine="paged"``, 32 decode slots, pages of 16): every sample runs its full 128 tokens, so
  paging can only cost; the target is paged >= 0.9x lockstep.
* **Geometric long tail** (``--only longtail``): the Tunix work's Qwen3 block, random init, but a
  vocabulary of 32, so that the stop token (id 2) ends a sample with probability ~1/37 a step
  (random init is not quite uniform) and lengths are ~geometric (mean 37); 32 prompts (16 random
  tokens each) x G 8 = 256 samples, budget 512 (~14x the mean). Sides: lockstep and paged at each
  ``--slots`` count. Each call ``i`` uses the key ``fold_in(key(0), i)`` on every side, so the
  engines must give the same lengths (the paged engine is designed so); the table says whether
  they did.
* **Log-normal long tail, with vLLM** (``--only vllm``): exactly the work of
  ``vllm_generate_bench.py --prompts 32 --group 8 --new 480
  --lengths lognormal:mean=60,sigma=0.8,seed=0`` on the tiny Qwen2 (same weights): prompt i
  repeats token 5 + i % 50 (16 tokens), sample i has the budget ``budgets()[i]`` (that script's
  function, imported), EOS ignored, T = 1: 256 samples, 15,406 new tokens. Sides: vLLM (its CPU
  build, ``VLLM_CPU_KVCACHE_SPACE=1 OMP_NUM_THREADS=2``, its own script's RESULT line), lockstep
  and paged (``--vllm-slots``) with ``sample_budgets``.

Long-tail tables give useful new tokens/s (sum of lengths / seconds), decode steps, slot
utilization (sum of lengths / slot-steps executed), the KV cache the call allocated and its peak
use (MiB: token slots x layers x 2 x kv heads x head dim x bytes), and ratios.

New tokens/s = sequences × new tokens / seconds (prefill included); each process reports the
median of ``--reps`` timed calls after 2 warm-up calls, and the table the median over rounds.
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_runs  # noqa: E402
from rollout_longtail import (LONGTAIL_WORK, VLLM_ENV, VLLM_WORK, engine_kwargs,  # noqa: E402
                              longtail_table, parse_vllm, side_r1jax_longtail,
                              side_r1jax_vllm, side_vllm, vllm_command)

HF_WORK = dict(batch=32, prompt_len=16, new=128)
TUNIX_WORK = dict(prompts=4, group=4, prompt_len=32, new=32, cache=64)
TUNIX_PROMPTS = [  # tunix_grpo_bench.py's prompts, taken 4 at a time
    "What is 12 + 7? Answer:", "Compute 3 * 9. Answer:", "What is 100 - 58? Answer:",
    "Solve 6 * 7 = ? Answer:", "What is 81 / 9? Answer:", "Compute 15 + 27. Answer:",
    "What is 2 ** 5? Answer:", "Compute 44 - 19. Answer:",
]
PAD, BOS, EOS = 0, 1, 2


class ByteTokenizer:
    """tunix_grpo_bench.py's tokenizer: ids 0..2 specials, 3..258 bytes, 259..511 decode to ''."""

    def encode(self, text, **kwargs):
        return [b + 3 for b in text.encode("utf-8")]

    def decode(self, ids, **kwargs):
        return bytes(int(i) - 3 for i in ids if 3 <= int(i) < 259).decode("utf-8",
                                                                          errors="replace")

    def bos_id(self):
        return BOS

    def eos_id(self):
        return EOS

    def pad_id(self):
        return PAD


def tunix_model_config():
    """The Tunix harness's model in r1jax's config (426,752 parameters)."""
    from r1jax import models

    return models.ModelConfig(
        vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4,
        num_kv_heads=2, head_dim=32, model_type="qwen3", qk_norm=True, rope_theta=10_000.0,
        rms_norm_eps=1e-6, tie_embeddings=False,
        max_position_embeddings=TUNIX_WORK["cache"])


# ------------------------------------------------------------------------------------ r1jax sides
def side_r1jax_hf(reps: int) -> dict:
    import jax
    import numpy as np

    from r1jax import hf, rollout

    cfg, params = hf.load_pretrained(peer_runs.ensure_tiny_qwen2())
    w = HF_WORK
    prompts = np.random.default_rng(0).integers(2, cfg.vocab_size, (w["batch"], w["prompt_len"]))
    key = jax.random.key(0)

    def call(i):
        out = rollout.generate(params, cfg, prompts.tolist(), rng=jax.random.fold_in(key, i),
                               max_new_tokens=w["new"], temperature=1.0)
        jax.block_until_ready(out.tokens)
        assert out.tokens.shape == (w["batch"], w["new"]) and int(out.lengths.min()) == w["new"]

    res = peer_runs.timed(call, reps)
    res["tokens_per_s"] = w["batch"] * w["new"] / res["seconds"]
    return res


def side_r1jax_tunix(reps: int) -> dict:
    import jax
    import numpy as np

    from r1jax import models, rollout

    cfg = tunix_model_config()
    params = models.init(cfg, jax.random.key(0))
    tok, w = ByteTokenizer(), TUNIX_WORK
    key = jax.random.key(0)

    def call(i):
        texts = [TUNIX_PROMPTS[(i * w["prompts"] + p) % len(TUNIX_PROMPTS)]
                 for p in range(w["prompts"])]
        prompts = [[BOS] + tok.encode(t) for t in texts]
        out = rollout.generate(params, cfg, prompts, rng=jax.random.fold_in(key, i),
                               max_new_tokens=w["new"], group_size=w["group"], temperature=1.0,
                               top_p=1.0, pad_id=PAD, prompt_buckets=(w["prompt_len"],))
        tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
        completions = [tok.decode(t[:n]) for t, n in zip(tokens, lengths)]
        assert len(completions) == w["prompts"] * w["group"] and lengths.min() == w["new"]

    res = peer_runs.timed(call, reps)
    res["tokens_per_s"] = w["prompts"] * w["group"] * w["new"] / res["seconds"]
    return res


def side_r1jax_hf_paged(reps: int, slots: int | None = None) -> dict:
    """The HF work by the paged engine (every sample runs its full budget)."""
    import jax
    import numpy as np

    from r1jax import hf, rollout

    cfg, params = hf.load_pretrained(peer_runs.ensure_tiny_qwen2())
    w = HF_WORK
    prompts = np.random.default_rng(0).integers(2, cfg.vocab_size, (w["batch"], w["prompt_len"]))
    kwargs = engine_kwargs("paged", slots or w["batch"], 16)
    key = jax.random.key(0)

    def call(i):
        out = rollout.generate(params, cfg, prompts.tolist(), rng=jax.random.fold_in(key, i),
                               max_new_tokens=w["new"], temperature=1.0, **kwargs)
        jax.block_until_ready(out.tokens)
        assert out.tokens.shape == (w["batch"], w["new"]) and int(out.lengths.min()) == w["new"]

    res = peer_runs.timed(call, reps)
    res["tokens_per_s"] = w["batch"] * w["new"] / res["seconds"]
    return res


# ------------------------------------------------------------------------------------ peer sides
def side_tunix(reps: int) -> dict:
    """Tunix's vanilla sampler exactly as its GRPO rollout calls it (runs in the Tunix env)."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import numpy as np
    from flax import nnx
    from tunix.generate import sampler as sampler_lib
    from tunix.models.qwen3 import model as qwen3_lib

    w = TUNIX_WORK
    cfg = qwen3_lib.ModelConfig(
        num_layers=2, vocab_size=512, embed_dim=128, hidden_dim=256, num_heads=4, head_dim=32,
        num_kv_heads=2, rope_theta=10_000, norm_eps=1e-6, use_tied_embedding=False)
    model = qwen3_lib.Qwen3(cfg, rngs=nnx.Rngs(0))
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("fsdp", "tp"))
    with (jax.set_mesh(mesh) if hasattr(jax, "set_mesh") else mesh):
        state = nnx.state(model)
        nnx.update(model, jax.device_put(state, nnx.get_named_sharding(state, mesh)))
        sampler = sampler_lib.Sampler(model, ByteTokenizer(), sampler_lib.CacheConfig(
            cache_size=w["cache"], num_layers=2, num_kv_heads=2, head_dim=32))

        def call(i):
            texts = [TUNIX_PROMPTS[(i * w["prompts"] + p) % len(TUNIX_PROMPTS)]
                     for p in range(w["prompts"])]
            # GRPOLearner repeats each prompt G times before the rollout.
            batch = [t for t in texts for _ in range(w["group"])]
            out = sampler(input_strings=batch, max_generation_steps=w["new"],
                          max_prompt_length=w["prompt_len"], echo=False, temperature=1.0,
                          top_p=1.0, top_k=None, seed=None, pad_output=False,
                          eos_tokens=[512 + 7], return_logprobs=False)
            jax.block_until_ready(out.tokens)
            assert len(out.text) == len(batch) and min(len(t) for t in out.tokens) == w["new"]

        res = peer_runs.timed(call, reps)
    res["tokens_per_s"] = w["prompts"] * w["group"] * w["new"] / res["seconds"]
    import tunix
    res["version"] = f"tunix {getattr(tunix, '__version__', '0.1.7?')} jax {jax.__version__}"
    return res


def parse_hf(stdout: str) -> dict:
    """``hf_generate_bench.py``'s printout -> the same fields as the other sides."""
    res = {}
    for line in stdout.splitlines():
        if line.startswith("median "):
            res["seconds"] = float(line.split()[1])
            res["tokens_per_s"] = float(line.split("->")[1].split()[0])
        elif line.startswith("min "):
            res["seconds_min"] = float(line.split()[1])
        elif line.startswith("cores used by other processes"):
            values = [float(x) for x in line.split(":", 1)[1].split("(")[0].split(",")]
            res["others_cores"] = statistics.median(values)
        elif line.startswith("torch "):
            res["version"] = line.strip()
    if "tokens_per_s" not in res:
        raise RuntimeError(f"could not parse hf_generate_bench.py output:\n{stdout[-2000:]}")
    return res


SIDES = {"r1jax-hf": side_r1jax_hf, "r1jax-tunix": side_r1jax_tunix, "tunix": side_tunix,
         "r1jax-hf-paged": side_r1jax_hf_paged,
         "r1jax-longtail-lockstep": side_r1jax_longtail,
         "r1jax-longtail-paged": functools.partial(side_r1jax_longtail, engine="paged"),
         "r1jax-vllm-lockstep": side_r1jax_vllm,
         "r1jax-vllm-paged": functools.partial(side_r1jax_vllm, engine="paged"),
         "vllm": side_vllm}
SLOTTED = {"r1jax-hf-paged", "r1jax-longtail-paged", "r1jax-vllm-paged"}
R1JAX_ENV = {"JAX_PLATFORMS": "cpu"}
WORKS = ["hf", "tunix", "hf-paged", "longtail", "vllm"]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _others_idle(results: dict) -> tuple[float, str]:
    others = max(peer_runs.median(results[k], "others_cores") for k in results)
    idle = all(r["idle_before"].startswith("idle") for k in results for r in results[k])
    return others, "yes" if idle else "no"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--side", choices=sorted(SIDES), help="run one side and print its RESULT")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--long-reps", type=int, default=3,
                   help="timed calls per process in the long-tail works (each call takes seconds)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", choices=WORKS, default=None)
    p.add_argument("--slots", default=None,
                   help="paged decode slots, comma-separated: the long-tail work runs one side "
                        "per count (default 16,32,64); with --side, the first count (default: "
                        "64, the batch for r1jax-hf-paged)")
    p.add_argument("--vllm-slots", default="16,32,64",
                   help="paged decode slots in the vLLM work (one side per count)")
    p.add_argument("--idle-wait", type=int, default=900,
                   help="seconds to wait for an idle machine before each run (0: do not wait)")
    args = p.parse_args()
    if args.side:
        fn = SIDES[args.side]
        kwargs = {"slots": _ints(args.slots)[0]} if args.side in SLOTTED and args.slots else {}
        peer_runs.emit(fn(args.reps, **kwargs))
        return

    def me(reps):
        return [sys.executable, os.path.abspath(__file__), "--reps", str(reps), "--side"]

    print(f"machine: {peer_runs.machine_line()}", flush=True)
    comparisons = []
    if args.only in (None, "hf"):
        model = peer_runs.ensure_tiny_qwen2()
        hf_cmd = [peer_runs.peer_python("trl"),
                  os.path.join(peer_runs.PEER_SCRIPTS, "hf_generate_bench.py"), "--model", model,
                  "--batch", str(HF_WORK["batch"]), "--prompt-len", str(HF_WORK["prompt_len"]),
                  "--new", str(HF_WORK["new"]), "--runs", str(args.reps)]
        comparisons.append(("HF work: tiny Qwen2 (same weights), batch 32, prompt 16, 128 new",
                            "HF generate (torch CPU)",
                            {"r1jax": (me(args.reps) + ["r1jax-hf"], None, R1JAX_ENV),
                             "peer": (hf_cmd, parse_hf, {"OMP_NUM_THREADS": "2"})}))
    if args.only in (None, "tunix"):
        tunix_cmd = [peer_runs.peer_python("tunix"), os.path.abspath(__file__), "--reps",
                     str(args.reps), "--side", "tunix"]
        comparisons.append(("Tunix work: Qwen3 block, 4 prompts x G 4, prompt 32, 32 new",
                            "Tunix sampler (vanilla)",
                            {"r1jax": (me(args.reps) + ["r1jax-tunix"], None, R1JAX_ENV),
                             "peer": (tunix_cmd, None, {"JAX_PLATFORMS": "cpu"})}))
    rows = []
    for title, peer_name, sides in comparisons:
        results = peer_runs.alternate(sides, args.rounds, args.idle_wait)
        ours, theirs = (peer_runs.median(results[k], "tokens_per_s") for k in ("r1jax", "peer"))
        others, idle = _others_idle(results)
        rows.append([title, peer_name, f"{theirs:,.0f}", f"{ours:,.0f}", f"{ours / theirs:.2f}x",
                     f"{others:.2f}", idle])
    if rows:
        print()
        print(f"Rollout new tokens/s, median of {args.rounds} alternating rounds "
              f"(each the median of {args.reps} calls)")
        print(peer_runs.table(["work", "peer", "peer tok/s", "r1jax tok/s", "r1jax / peer",
                               "cores used by others", "idle before each run"], rows))

    if args.only in (None, "hf-paged"):
        sides = {"r1jax lockstep": (me(args.reps) + ["r1jax-hf"], None, R1JAX_ENV),
                 "r1jax paged": (me(args.reps) + ["r1jax-hf-paged", "--slots",
                                                  str(HF_WORK["batch"])], None, R1JAX_ENV)}
        results = peer_runs.alternate(sides, args.rounds, args.idle_wait)
        lock, pag = (peer_runs.median(results[k], "tokens_per_s") for k in sides)
        others, idle = _others_idle(results)
        print()
        print(f"HF work (fixed length), paged engine beside lockstep: new tokens/s, median of "
              f"{args.rounds} alternating rounds (each the median of {args.reps} calls)")
        print(peer_runs.table(
            ["work", "lockstep tok/s", "paged tok/s (S 32, pages 16)", "paged / lockstep",
             "target", "cores used by others", "idle before each run"],
            [["tiny Qwen2, batch 32, prompt 16, 128 new", f"{lock:,.0f}", f"{pag:,.0f}",
              f"{pag / lock:.2f}x", ">= 0.90x", f"{others:.2f}", idle]]))

    if args.only in (None, "longtail"):
        w = LONGTAIL_WORK
        sides = {"r1jax lockstep": (me(args.long_reps) + ["r1jax-longtail-lockstep"], None,
                                    R1JAX_ENV)}
        for s in _ints(args.slots or "16,32,64"):
            sides[f"r1jax paged S={s}"] = (me(args.long_reps) + ["r1jax-longtail-paged",
                                                                 "--slots", str(s)],
                                           None, R1JAX_ENV)
        results = peer_runs.alternate(sides, args.rounds, args.idle_wait)
        mean = peer_runs.median(results["r1jax lockstep"], "mean_length")
        others, idle = _others_idle(results)
        print()
        print(f"Geometric long tail: Qwen3 block, vocab {w['vocab']}, stop id {w['stop']}, "
              f"{w['prompts']} prompts x G {w['group']}, prompt {w['prompt_len']}, budget "
              f"{w['new']} (mean length {mean:.1f}); medians of {args.rounds} alternating rounds "
              f"(each the median of {args.long_reps} calls); idle before each run: {idle}")
        print(longtail_table(results, "r1jax lockstep"))

    if args.only in (None, "vllm"):
        w = VLLM_WORK
        sides = {"vLLM": (vllm_command(args.long_reps), parse_vllm, VLLM_ENV),
                 "r1jax lockstep": (me(args.long_reps) + ["r1jax-vllm-lockstep"], None,
                                    R1JAX_ENV)}
        for s in _ints(args.vllm_slots):
            sides[f"r1jax paged S={s}"] = (me(args.long_reps) + ["r1jax-vllm-paged", "--slots",
                                                                 str(s)], None, R1JAX_ENV)
        results = peer_runs.alternate(sides, args.rounds, args.idle_wait)
        version = results["vLLM"][0].get("version", "vllm")
        others, idle = _others_idle(results)
        print()
        print(f"Log-normal long tail ({version}): tiny Qwen2, {w['prompts']} prompts x G "
              f"{w['group']}, prompt {w['prompt_len']}, budgets {w['lengths']} capped at "
              f"{w['new']}, EOS ignored; medians of {args.rounds} alternating rounds (each the "
              f"median of {args.long_reps} calls); idle before each run: {idle}")
        print(longtail_table(results, "vLLM"))


if __name__ == "__main__":
    main()
