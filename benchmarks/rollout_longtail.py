"""The long-tail rollout works of ``rollout.py``: their sides (r1jax's lockstep and paged
engines, vLLM's CPU build), per-call statistics and their table. Run them through ``rollout.py``
(``--only longtail``, ``--only vllm``, ``--side r1jax-vllm-paged``); the works are described in
its docstring and in ``benchmarks/README.md``."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import statistics

import peer_runs

LONGTAIL_WORK = dict(prompts=32, group=8, prompt_len=16, new=512, vocab=32, stop=2, page_size=16)
VLLM_WORK = dict(prompts=32, group=8, prompt_len=16, new=480, page_size=16,
                 lengths="lognormal:mean=60,sigma=0.8,seed=0")
LONG_WARMUP = 1  # warm-up calls of the long-tail sides (the first compiles)


def engine_kwargs(engine: str, slots: int | None, page_size: int) -> dict:
    """``generate``'s engine arguments."""
    if engine == "lockstep":
        return dict(engine="lockstep")
    return dict(engine="paged", decode_slots=int(slots), page_size=int(page_size))


def kv_bytes_per_token(cfg) -> int:
    """Keys and values of every layer for one token slot."""
    import jax.numpy as jnp

    return cfg.num_layers * 2 * cfg.num_kv_heads * cfg.head_dim * jnp.dtype(cfg.dtype).itemsize


def call_stats(out, cfg) -> tuple[dict, object]:
    """One call's counts: useful tokens, decode steps, slot-steps, KV token slots (allocated and
    peak)."""
    import numpy as np

    lengths = np.asarray(out.lengths)
    per_token = kv_bytes_per_token(cfg)
    return dict(useful_tokens=int(lengths.sum()), decode_steps=int(out.decode_steps),
                slot_steps=int(out.slot_steps), kv_mib=int(out.kv_tokens) * per_token / 2**20,
                kv_peak_mib=int(out.kv_tokens_peak) * per_token / 2**20,
                mean_length=float(lengths.mean()), max_length=int(lengths.max())), lengths


def summarize_calls(res: dict, all_lengths: list) -> dict:
    """Per-call stats -> medians (tokens/s per call), and a digest of every call's lengths (the
    warm-up calls' too) that another engine given the same keys must reproduce."""
    calls = res.pop("calls")
    for key in ("decode_steps", "slot_steps", "useful_tokens", "kv_mib", "kv_peak_mib",
                "mean_length", "max_length"):
        res[key] = statistics.median(c[key] for c in calls)
    res["tokens_per_s"] = statistics.median(c["useful_tokens"] / c["seconds"] for c in calls)
    res["slot_utilization"] = statistics.median(c["useful_tokens"] / c["slot_steps"]
                                                for c in calls)
    digest = hashlib.sha1()
    for lengths in all_lengths:
        digest.update(lengths.astype("int32").tobytes())
    res["lengths_digest"] = digest.hexdigest()[:12]
    return res


def longtail_model_config():
    """The Tunix work's Qwen3 block (``rollout.tunix_model_config``) with a 32-token vocabulary
    (the stop id 2 is ~1/32 a step)."""
    from r1jax import models

    w = LONGTAIL_WORK
    return models.ModelConfig(
        vocab_size=w["vocab"], hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4,
        num_kv_heads=2, head_dim=32, model_type="qwen3", qk_norm=True, rope_theta=10_000.0,
        rms_norm_eps=1e-6, tie_embeddings=False,
        max_position_embeddings=w["prompt_len"] + w["new"])


def side_r1jax_longtail(reps: int, engine: str = "lockstep", slots: int = 64) -> dict:
    import jax
    import numpy as np

    from r1jax import models, rollout

    w = LONGTAIL_WORK
    cfg = longtail_model_config()
    params = models.init(cfg, jax.random.key(0))
    prompts = np.random.default_rng(0).integers(3, w["vocab"], (w["prompts"], w["prompt_len"]))
    kwargs = engine_kwargs(engine, slots, w["page_size"])
    key, all_lengths = jax.random.key(0), []

    def call(i):
        out = rollout.generate(params, cfg, prompts.tolist(), rng=jax.random.fold_in(key, i),
                               max_new_tokens=w["new"], group_size=w["group"], temperature=1.0,
                               stop_ids=(w["stop"],), **kwargs)
        jax.block_until_ready(out.tokens)
        stats, lengths = call_stats(out, cfg)
        all_lengths.append(lengths)
        return stats

    res = summarize_calls(peer_runs.timed(call, reps, warmup=LONG_WARMUP), all_lengths)
    res["engine"] = engine if engine == "lockstep" else f"paged S={slots}"
    return res


def vllm_budgets() -> list[int]:
    """The per-sample budgets of ``vllm_generate_bench.py --lengths ...`` (its own function)."""
    path = os.path.join(peer_runs.PEER_SCRIPTS, "vllm_generate_bench.py")
    spec = importlib.util.spec_from_file_location("vllm_generate_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports vllm only inside main()
    w = VLLM_WORK
    return module.budgets(w["lengths"], w["prompts"] * w["group"], w["new"])


def side_r1jax_vllm(reps: int, engine: str = "lockstep", slots: int = 64) -> dict:
    import jax

    from r1jax import hf, rollout

    w = VLLM_WORK
    cfg, params = hf.load_pretrained(peer_runs.ensure_tiny_qwen2())
    prompts = [[5 + (i % 50)] * w["prompt_len"] for i in range(w["prompts"])]
    caps = vllm_budgets()
    kwargs = engine_kwargs(engine, slots, w["page_size"])
    kwargs.update(max_new_tokens=w["new"], sample_budgets=caps)
    key, all_lengths = jax.random.key(0), []

    def call(i):
        out = rollout.generate(params, cfg, prompts, rng=jax.random.fold_in(key, i),
                               group_size=w["group"], temperature=1.0, stop_ids=(), **kwargs)
        jax.block_until_ready(out.tokens)
        stats, lengths = call_stats(out, cfg)
        assert lengths.tolist() == caps, "lengths differ from the per-sample budgets"
        all_lengths.append(lengths)
        return stats

    res = summarize_calls(peer_runs.timed(call, reps, warmup=LONG_WARMUP), all_lengths)
    res["engine"] = engine if engine == "lockstep" else f"paged S={slots}"
    return res


def parse_vllm(stdout: str) -> dict:
    """``vllm_generate_bench.py``'s ``RESULT key=value ...`` line -> the other sides' fields."""
    lines = [l for l in stdout.splitlines() if l.startswith(peer_runs.RESULT)]
    if not lines:
        raise RuntimeError(f"could not parse vllm_generate_bench.py output:\n{stdout[-2000:]}")
    kv = dict(item.split("=", 1) for item in lines[-1][len(peer_runs.RESULT):].split())
    return dict(seconds=float(kv["seconds"]), tokens_per_s=float(kv["tokens_per_s"]),
                useful_tokens=int(kv["new_tokens"]), samples=int(kv["samples"]),
                max_length=int(kv["max_budget"]), version=kv["engine"])


VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "2"}


def vllm_command(reps: int) -> list[str]:
    w = VLLM_WORK
    return [peer_runs.peer_python("vllm"),
            os.path.join(peer_runs.PEER_SCRIPTS, "vllm_generate_bench.py"),
            "--model", peer_runs.ensure_tiny_qwen2(), "--prompts", str(w["prompts"]),
            "--group", str(w["group"]), "--prompt-len", str(w["prompt_len"]),
            "--new", str(w["new"]), "--lengths", w["lengths"], "--reps", str(reps)]


def side_vllm(reps: int) -> dict:
    """vLLM's side of the log-normal work: its own script in its own environment."""
    return peer_runs.run_side(vllm_command(reps), parse_vllm, VLLM_ENV)


def longtail_table(results: dict, reference: str) -> str:
    """One row per side of a long-tail work: tokens/s against ``reference`` (and against lockstep,
    when that is not the reference), KV memory against lockstep."""
    lockstep = results.get("r1jax lockstep")
    ratio_to = [reference] + (["r1jax lockstep"] if lockstep and reference != "r1jax lockstep"
                              else [])

    def med(runs, key, spec):
        value = peer_runs.median(runs, key)
        return "n/a" if value != value else format(value, spec)

    def ratio(runs, base, key):
        value = peer_runs.median(runs, key) / peer_runs.median(results[base], key)
        return "n/a" if value != value else f"{value:.2f}x"

    rows = []
    for name, runs in results.items():
        digests = {r.get("lengths_digest") for r in runs}
        agree = "-" if lockstep is None or name == "r1jax lockstep" or None in digests else (
            "yes" if digests == {r.get("lengths_digest") for r in lockstep} else "NO")
        rows.append([name, med(runs, "tokens_per_s", ",.0f"),
                     *[ratio(runs, base, "tokens_per_s") for base in ratio_to],
                     med(runs, "decode_steps", ",.0f"), med(runs, "slot_utilization", ".1%"),
                     med(runs, "kv_mib", ",.2f"), med(runs, "kv_peak_mib", ",.2f"),
                     ratio(runs, "r1jax lockstep", "kv_peak_mib") if lockstep else "n/a",
                     agree, med(runs, "others_cores", ".2f")])
    short = {"r1jax lockstep": "lockstep"}
    return peer_runs.table(
        ["side", "useful tok/s", *[f"vs {short.get(b, b)}" for b in ratio_to], "decode steps",
         "slot util", "KV alloc MiB", "KV peak MiB", "peak KV vs lockstep", "lengths = lockstep",
         "cores used by others"], rows)
