"""token_logprobs: forward + backward time and memory of each impl beside the reference.

    JAX_PLATFORMS=cpu python benchmarks/logprob.py     # N=4096 D=1024, V in 32768/131072/151936
    python benchmarks/logprob.py --vocab 32768 --repeats 2    # one vocab size
    python benchmarks/logprob.py --aot-only                   # just the TPU ahead-of-time figures

Each (impl, V) case runs in its own subprocess, so its max RSS is its own.  Per case: the jitted
value-and-grad of sum(logp * g) (plus the entropy with --entropy) is compiled once, run once to
warm up, then timed ``--repeats`` times (median).  Columns: wall time; process CPU time (all
threads; steadier than wall time on a shared machine); XLA's temporary buffer bytes from
``compiled.memory_analysis()``; process max RSS; each also as a ratio to the reference.
Impls: the reference and xla_chunked everywhere, pallas_tpu on TPU, pallas_gpu on GPU (Pallas
kernels in interpret mode are simulators, so they are not timed on CPU).  On GPU the time is also
set beside the 8 N D V FLOP roofline (forward 2, backward 6: the logits are recomputed).

Then, in one more subprocess, the TPU ahead-of-time figures: libtpu compiles the Pallas TPU kernels
for a v5e:2x2 topology on this host (no TPU needed) for a Qwen2.5-7B head (D=3584, V=152064) at
32k completion tokens per chip, and reports XLA's per-chip memory analysis.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

# Dense bf16 peak FLOP/s by device kind, for the GPU roofline column (override: --peak-tflops).
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}
QWEN_7B_HEAD = (3584, 152064)
AOT_TOKENS_PER_CHIP = 32768


def run_case(impl: str, n: int, d: int, vocab: int, dtype: str, repeats: int, entropy: bool):
    """Runs in the child process; returns one table row as a dict."""
    import jax
    import jax.numpy as jnp

    from kernels import token_logprobs

    key_h, key_w, key_t, key_g = jax.random.split(jax.random.key(0), 4)
    hidden = (jax.random.normal(key_h, (n, d)) / d**0.5).astype(dtype)
    lm_head = jax.random.normal(key_w, (d, vocab)).astype(dtype)
    targets = jax.random.randint(key_t, (n,), 0, vocab)
    g = jax.random.normal(key_g, (n,))

    def loss(h, w):
        logp, ent = token_logprobs(h, w, targets, return_entropy=entropy, impl=impl)
        return jnp.sum(logp * g) + (jnp.sum(ent) if entropy else 0.0)

    step = jax.jit(jax.value_and_grad(loss, (0, 1)))
    compiled = step.lower(hidden, lm_head).compile()
    temp_bytes = compiled.memory_analysis().temp_size_in_bytes
    jax.block_until_ready(compiled(hidden, lm_head))  # warm-up
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        jax.block_until_ready(compiled(hidden, lm_head))
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return dict(impl=impl, vocab=vocab, seconds=statistics.median(times),
                cpu_seconds=statistics.median(cpu_times), temp_bytes=temp_bytes,
                max_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                backend=jax.default_backend(), device_kind=jax.devices()[0].device_kind)


def run_aot():
    """Runs in the child process: TPU v5e AOT memory figures for the Qwen2.5-7B head."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.experimental import topologies
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from kernels import token_logprobs

    topology = topologies.get_topology_desc(platform="tpu", topology_name="v5e:2x2")
    mesh = Mesh(np.array(topology.devices), ("data",))
    d, vocab = QWEN_7B_HEAD
    n = AOT_TOKENS_PER_CHIP * mesh.size
    arg = lambda shape, dtype, spec: jax.ShapeDtypeStruct(  # noqa: E731
        shape, dtype, sharding=NamedSharding(mesh, spec))
    args = (arg((n, d), jnp.bfloat16, P("data")), arg((d, vocab), jnp.bfloat16, P()),
            arg((n,), jnp.int32, P("data")), arg((n,), jnp.float32, P("data")))
    rows = []
    for impl in ("pallas_tpu", "reference"):
        for with_grad in (False, True):
            def local(h, w, t, g, impl=impl, with_grad=with_grad):
                def loss(h, w):
                    return jnp.sum(token_logprobs(h, w, t, impl=impl)[0] * g)
                if not with_grad:
                    return jax.lax.psum(loss(h, w), "data")
                value, (dh, dw) = jax.value_and_grad(loss, (0, 1))(h, w)
                return jax.lax.psum(value, "data"), dh, jax.lax.psum(dw, "data")

            out_specs = (P(), P("data"), P()) if with_grad else P()
            step = jax.jit(jax.shard_map(local, mesh=mesh, out_specs=out_specs, check_vma=False,
                                         in_specs=(P("data"), P(), P("data"), P("data"))))
            row = dict(impl=impl, what="fwd+bwd" if with_grad else "fwd")
            try:
                stats = step.lower(*args).compile().memory_analysis()
                row.update(temp_bytes=stats.temp_size_in_bytes,
                           argument_bytes=stats.argument_size_in_bytes,
                           output_bytes=stats.output_size_in_bytes)
            except Exception as err:  # noqa: BLE001  the reference is expected not to fit
                message = str(err).strip().splitlines()[0]
                need = re.search(r"HLO temporaries \(([\d.]+)G\)", message)
                if need:  # XLA says how much it wanted before giving up
                    row.update(temp_bytes=float(need.group(1)) * 2**30, fits=False)
                else:
                    row.update(error=message[:110])
            rows.append(row)
    return rows


def _child(argv: list[str], env: dict) -> dict | list:
    proc = subprocess.run([sys.executable, __file__, *argv], env=env, capture_output=True,
                          text=True, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{") or line.startswith("["):
            return json.loads(line)
    return dict(error=(proc.stderr.strip().splitlines() or ["no output"])[-1][:110])


def _mib(x: float) -> str:
    return f"{x / 2**20:,.0f}"


def _print_table(rows: list[dict], n: int, d: int, peak_tflops: float | None):
    header = (f"{'V':>7} {'impl':<12} {'fwd+bwd ms':>11} {'x ref':>6} {'CPU-time ms':>12} "
              f"{'x ref':>6} {'XLA temp MiB':>13} {'x ref':>6} {'max RSS MiB':>12} {'x ref':>6}")
    if peak_tflops:
        header += f" {'roofline ms':>12} {'% roofline':>10}"
    print(header)
    print("-" * len(header))
    reference = {r["vocab"]: r for r in rows if r.get("impl") == "reference" and "error" not in r}
    for r in rows:
        if "error" in r:
            print(f"{r['vocab']:>7} {r['impl']:<12} failed: {r['error']}")
            continue
        ref = reference.get(r["vocab"])
        ratio = lambda k: f"{r[k] / ref[k]:.2f}" if ref and ref[k] else "-"  # noqa: E731
        line = (f"{r['vocab']:>7} {r['impl']:<12} {r['seconds'] * 1e3:>11,.0f} "
                f"{ratio('seconds'):>6} {r['cpu_seconds'] * 1e3:>12,.0f} {ratio('cpu_seconds'):>6} "
                f"{_mib(r['temp_bytes']):>13} {ratio('temp_bytes'):>6} "
                f"{_mib(r['max_rss_bytes']):>12} {ratio('max_rss_bytes'):>6}")
        if peak_tflops:
            roofline = 8 * n * d * r["vocab"] / (peak_tflops * 1e12)
            line += f" {roofline * 1e3:>12.1f} {100 * roofline / r['seconds']:>9.0f}%"
        print(line, flush=True)


def _print_aot(rows: list[dict] | dict):
    d, vocab = QWEN_7B_HEAD
    logits = AOT_TOKENS_PER_CHIP * vocab * 4
    print(f"\nTPU v5e:2x2 ahead-of-time compile, bf16 Qwen2.5-7B head D={d} V={vocab}, "
          f"{AOT_TOKENS_PER_CHIP} tokens per chip; per chip (one f32 N x V = {_mib(logits)} MiB):")
    if isinstance(rows, dict):
        print(f"  unavailable: {rows['error']}")
        return
    print(f"{'impl':<12} {'pass':<8} {'temp MiB':>10} {'temp / NV4':>11} {'args MiB':>9} "
          f"{'out MiB':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['impl']:<12} {r['what']:<8} does not compile: {r['error']}")
            continue
        if r.get("fits", True):
            sizes = f"{_mib(r['argument_bytes']):>9} {_mib(r['output_bytes']):>8}"
        else:
            sizes = "  does not fit the 16 GiB HBM of a v5e chip"
        print(f"{r['impl']:<12} {r['what']:<8} {_mib(r['temp_bytes']):>10} "
              f"{r['temp_bytes'] / logits:>11.4f} {sizes}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4096, help="tokens")
    parser.add_argument("--d", type=int, default=1024, help="model width")
    parser.add_argument("--vocab", default="32768,131072,151936", help="comma-separated V")
    parser.add_argument("--impls", default=None, help="comma-separated; default per backend")
    parser.add_argument("--dtype", default=None, help="float32 on CPU, bfloat16 elsewhere")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--entropy", action="store_true", help="also return and use entropy")
    parser.add_argument("--peak-tflops", type=float, default=None, help="GPU roofline peak")
    parser.add_argument("--skip-aot", action="store_true")
    parser.add_argument("--aot-only", action="store_true")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # child: impl:V
    parser.add_argument("--aot-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case:
        impl, vocab = args.case.split(":")
        print(json.dumps(run_case(impl, args.n, args.d, int(vocab), args.dtype, args.repeats,
                                  args.entropy)))
        return
    if args.aot_child:
        print(json.dumps(run_aot()))
        return

    import jax  # the parent only asks which backend the children will see

    backend = jax.default_backend()
    device_kind = jax.devices()[0].device_kind
    impls = args.impls.split(",") if args.impls else ["reference", "xla_chunked"] + (
        {"tpu": ["pallas_tpu"], "gpu": ["pallas_gpu"]}.get(backend, []))
    dtype = args.dtype or ("float32" if backend == "cpu" else "bfloat16")
    peak = args.peak_tflops
    if peak is None and backend == "gpu":
        peak = next((v for k, v in GPU_PEAK_TFLOPS.items() if k in device_kind), None)
    env = dict(os.environ)
    if not args.aot_only:
        print(f"# {backend} ({device_kind}, {os.cpu_count()} CPUs), N={args.n} D={args.d} "
              f"{dtype}, entropy={args.entropy}, median of {args.repeats}")
        rows = []
        for vocab in [int(v) for v in args.vocab.split(",")]:
            for impl in impls:
                row = _child(["--case", f"{impl}:{vocab}", "--n", str(args.n), "--d", str(args.d),
                              "--dtype", dtype, "--repeats", str(args.repeats)]
                             + (["--entropy"] if args.entropy else []), env)
                rows.append(dict(row, impl=impl, vocab=vocab))
        _print_table(rows, args.n, args.d, peak)
    if not args.skip_aot:
        # The TPU topology comes from libtpu; keep the child on the CPU backend so that libtpu
        # does not go looking for TPU hardware.
        _print_aot(_child(["--aot-child"], dict(env, JAX_PLATFORMS="cpu")))


if __name__ == "__main__":
    main()
