"""GRPO step time of r1jax beside Tunix and TRL on each peer's own work: one table with ratios.

    python benchmarks/run_peers.py                     # 3 alternating rounds per peer
    python benchmarks/run_peers.py --rounds 5 --only trl

For each peer: its harness from ``../shared/peers`` in its own virtual environment outside the
project (``../peer-envs/.peer-tunix``, ``../peer-envs/.peer-trl``; created with the README's pip
lines when missing — peers are never project dependencies), then ``benchmarks/grpo_step.py`` on
the same work, alternating A B A B …, each run in a fresh process after the machine is idle
(``../shared/peers/wait_idle.sh``). Each process reports medians over its steady-state steps
(the Tunix harness prints means); the table shows the median over rounds and r1jax / peer.
A last process measures this CPU's f32 matmul peak for the MFU line.

All sides run with the same glibc malloc settings (``--malloc``): by default one arena and no
mmap for large blocks, so that XLA's per-call temporary buffer (tens of MB for an update) is
reused instead of being mapped, zero-filled by the kernel page by page, and unmapped at every call.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_runs  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MALLOC = {"tuned": peer_runs.MALLOC_ENV, "default": {}}


def parse_tunix(stdout: str) -> dict:
    """``tunix_grpo_bench.py``'s printout (means ± std over steady-state steps)."""
    res = {}
    keys = {"steady-state s/step": "step_s", "rollout (generate)": "rollout_s",
            "reference logps": "ref_s", "policy update": "update_s"}
    for line in stdout.splitlines():
        text = line.strip()
        for label, key in keys.items():
            if text.startswith(label):
                res[key] = float(text.split(":", 1)[1].split("+-")[0])
        if text.startswith("other (reward"):
            res["host_s"] = float(text.split(":")[-1])
        if text.startswith("tunix "):
            res["version"] = text.split("  devices")[0]
    if "step_s" not in res:
        raise RuntimeError(f"could not parse tunix_grpo_bench.py output:\n{stdout[-3000:]}")
    return res


def trl_side(python: str, model: str, steps: int):
    out = os.path.join(peer_runs.PEER_WORK, "trl-bench.json")

    def parse(stdout: str) -> dict:
        with open(out) as f:
            med = json.load(f)["medians"]
        rollout_total = med["rollout_total"]
        return dict(
            step_s=med["step_total"], rollout_s=med["generate"], ref_s=med["ref_fwd"],
            update_s=med["train_part(step - rollout_total)"],
            host_s=rollout_total - med["generate"] - med["ref_fwd"] - med["old_policy_fwd"],
            others_cores=med["others_cores"], version=_line(stdout, "torch "))

    cmd = [python, os.path.join(peer_runs.PEER_SCRIPTS, "trl_grpo_bench.py"), "--model", model,
           "--steps", str(steps + 2), "--warmup", "2", "--beta", "0.04", "--json", out,
           "--out", os.path.join(peer_runs.PEER_WORK, "trl-out")]
    return cmd, parse


def _line(stdout: str, prefix: str) -> str:
    return next((l.strip() for l in stdout.splitlines() if l.startswith(prefix)), "?")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20, help="steady-state steps per process")
    p.add_argument("--only", choices=["tunix", "trl"], default=None)
    p.add_argument("--idle-wait", type=int, default=900)
    p.add_argument("--malloc", choices=sorted(MALLOC), default="tuned")
    p.add_argument("--ref", choices=["separate", "inside"], default="separate")
    args = p.parse_args()
    env = dict(MALLOC[args.malloc])
    r1jax_env = dict(env, JAX_PLATFORMS="cpu")
    grpo = [sys.executable, os.path.join(HERE, "grpo_step.py"), "--steps", str(args.steps),
            "--warmup", "3", "--ref", args.ref, "--malloc", args.malloc, "--side"]
    comparisons = []
    if args.only in (None, "tunix"):
        tunix = [peer_runs.peer_python("tunix"),
                 os.path.join(peer_runs.PEER_SCRIPTS, "tunix_grpo_bench.py"),
                 "--warmup", "3", "--steps", str(args.steps)]
        comparisons.append(("Tunix 0.1.7", 0.5, {
            "peer": (tunix, parse_tunix, dict(env, JAX_PLATFORMS="cpu")),
            "r1jax": (grpo + ["tunix"], None, r1jax_env)}))
    if args.only in (None, "trl"):
        model = peer_runs.ensure_tiny_qwen2()
        cmd, parse = trl_side(peer_runs.peer_python("trl"), model, args.steps)
        comparisons.append(("TRL 1.16", 0.35, {
            "peer": (cmd, parse, dict(env, OMP_NUM_THREADS="2")),
            "r1jax": (grpo + ["trl"], None, r1jax_env)}))

    print(f"machine: {peer_runs.machine_line()}; malloc: {args.malloc} {env}", flush=True)
    summary = []
    for name, target, sides in comparisons:
        results = peer_runs.alternate(sides, args.rounds, args.idle_wait)
        summary.append((name, target, results))
    peak = peer_runs.run_side([sys.executable, os.path.join(HERE, "grpo_step.py"), "--side",
                               "peak"], env=r1jax_env)["peak_flops"]

    rows, mfu_lines = [], []
    for name, target, results in summary:
        def med(side, key, results=results):
            return peer_runs.median(results[side], key)

        for key, label in (("step_s", "step"), ("rollout_s", "rollout"), ("ref_s", "reference"),
                           ("update_s", "update"), ("host_s", "host: reward+adv")):
            theirs, ours = med("peer", key), med("r1jax", key)
            goal = f"<= {target}x" if key == "step_s" else ("< 1x" if key in (
                "rollout_s", "update_s") else "")
            rows.append([name if key == "step_s" else "", label, f"{theirs:.4f}", f"{ours:.4f}",
                         f"{ours / theirs:.2f}x" if theirs > 0 else "-", goal])
        others = max(med(side, "others_cores") for side in results)
        idle = all(r["idle_before"].startswith("idle") for s in results for r in results[s])
        rows.append(["", "cores used by others / idle", "", "", f"{others:.2f}",
                     "idle" if idle else "NOT idle"])
        flops, step = med("r1jax", "model_flops"), med("r1jax", "step_s")
        mfu_lines.append(
            f"MFU r1jax on the {name} work: {flops / 1e9:.2f} GFLOP/step (2/6·N·tokens, "
            f"N = {int(med('r1jax', 'matmul_params')):,}) / {step:.4f} s = "
            f"{flops / step / 1e9:.1f} GFLOP/s = {100 * flops / step / peak:.1f}% of the "
            f"{peak / 1e9:.0f} GFLOP/s f32 matmul peak measured here (XLA, 2048^3)")
    print()
    print(f"GRPO step, seconds (median over {args.rounds} alternating rounds; r1jax: medians "
          f"of {args.steps} steps after 3 warm-up; ref = {args.ref})")
    print(peer_runs.table(["peer", "phase", "peer s", "r1jax s", "r1jax / peer", "target"], rows))
    print()
    print("\n".join(mfu_lines))


if __name__ == "__main__":
    main()
