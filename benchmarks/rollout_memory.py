"""TPU memory of the rollout, ahead of time: dense lockstep KV cache vs the paged pool, at R1 scale.

    python benchmarks/rollout_memory.py                # 7B, v5p:2x2x2, 32 x 16 x 32k (~8 min)
    python benchmarks/rollout_memory.py --compile none  # the analytic table only (seconds)
    python benchmarks/rollout_memory.py --layers 1,2    # 1- and 2-layer compiles, extrapolated
    python benchmarks/rollout_memory.py --slots 128,256 --mean 8192 --utilization 0.8 \
        --compile paged-worst,lockstep                  # the worst-case pools compiled too

The paper's setting: a 7B policy (the ``qwen2.5-7b`` preset in bf16), 32 prompts x 16 samples =
512 sequences per step, prompts bucketed to 512 tokens and a budget of 32768 new tokens, on a v5p
slice whose chips split the batch (the trainer's default mesh: ``fsdp`` = every chip, and the batch
over ``data`` x ``fsdp``). Two measures, both per chip:

1. **Analytic KV bytes.** One token of KV costs ``layers x 2 x K x E x itemsize`` bytes (56 KiB for
   Qwen2.5-7B in bf16). The lockstep engine (``r1jax.rollout.engine``) holds a dense cache of
   ``P·G·(Lp + T − 1)`` token slots (the last token is never fed back), the batch split over the
   shards. The paged engine (``r1jax.rollout.paged``) holds, per batch shard, ``kv_pages`` pages of
   ``page_size`` tokens (``paged.plan``): by default the prompts' pages plus every slot's worst case
   (``slots x ceil((T − 1) / page_size)`` pages, so no sample ever waits), or, overcommitted, the
   prompts' pages plus ``slots x mean / utilization`` tokens (R1-Zero-like: a mean of 8k of the
   32k budget, the pool 80% used); a pool that runs dry makes samples wait or restart, it never
   truncates. The table adds the bf16 weights, FSDP-sharded (the parameters' resting layout) or
   whole on every chip, and says whether that fits a v5p chip's HBM
   (``r1jax.rl.aot_memory.TPU_HBM_BYTES``). The paged engine's ``shard_map`` takes the parameters
   replicated (``in_specs=P()``), so during its rollout every chip holds the whole weights
   (``decode.prepare_weights`` fuses q/k/v and gate/up into a second copy on CPU only).

2. **Compiled, ahead of time.** ``paged.compiled_paged`` and the lockstep ``compiled_rollout``
   (its TPU path, ``unstack=False``) are lowered with abstract sharded inputs
   (``jax.ShapeDtypeStruct``; parameters as ``models.param_shardings`` lays them out) and
   compiled by libtpu's XLA:TPU and Mosaic for the topology (``r1jax.rl.aot.tpu_devices``,
   traced as on TPU so that the paged attention is the Pallas kernel). Per chip:
   ``memory_analysis()``'s argument, output, temporary and code bytes, and the "heap", XLA:TPU's
   own memory-usage report (from an ``xla_dump_to`` dump in a temporary directory): the
   temporaries packed by live range, below their plain sum, and the figure its out-of-memory
   check compares with the chip's HBM. A program
   XLA:TPU refuses for want of HBM is a verdict: the line gives the bytes it says it needs
   (``aot_memory.program_memory``). The largest allocations of each heap are listed (the pools,
   the gathered weights...). The KV each program's decode loop carries is also read from
   its jaxpr and checked against the analytic count. The programs unroll their layers: a
   28-layer paged rollout takes ~4 min to compile on this 2-core host, the lockstep one is refused
   in ~30 s. ``--layers 1,2`` compiles 1- and 2-layer models of the same shapes and extrapolates
   every byte count linearly to the model's layers (said so in the output); XLA packs small
   programs differently, so that is a rough guide only (here up to a third off, either way).

Nothing runs and nothing is materialized; no TPU is needed (libtpu only).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the TPU is described, not used
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # as launch/aot.py: compile only

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from r1jax import models  # noqa: E402
from r1jax.rl.aot import _sharded, tpu_devices, traced_for  # noqa: E402
from r1jax.rl.aot_memory import (TPU_HBM_BYTES, CompileError, ProgramMemory,  # noqa: E402
                                 program_memory)
from r1jax.rollout import paged  # noqa: E402
try:  # the lockstep engine's own module, where there is one
    from r1jax.rollout.lockstep import compiled_rollout  # noqa: E402
except ImportError:
    from r1jax.rollout.engine import compiled_rollout  # noqa: E402
from r1jax.rollout.sampling import SamplingParams  # noqa: E402
from r1jax.rollout.stops import StopCriteria  # noqa: E402
from r1jax.sharding import Sharding, make_mesh  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xla_heap import (Compiled, WithOptions, extrapolate, gib, need_bytes,  # noqa: E402
                      read_heap_report)


# ------------------------------------------------------------------------------------ analytic


def kv_bytes_per_token(cfg: models.ModelConfig) -> int:
    """Keys and values of one token over every layer, in the cache dtype (the activation dtype)."""
    return (cfg.num_layers * 2 * cfg.num_kv_heads * cfg.head_dim
            * jnp.dtype(cfg.activation_dtype).itemsize)


def dense_kv_tokens(num_prompts: int, group_size: int, prompt_len: int,
                    max_new_tokens: int) -> int:
    """Token slots of the lockstep engine's dense cache, over all shards (``Rollout.kv_tokens``)."""
    return num_prompts * group_size * (prompt_len + max_new_tokens - 1)


def paged_kv_tokens(plan: paged.PagedPlan, shards: int) -> int:
    """Token slots of the paged engine's pool, over all shards (``Rollout.kv_tokens``)."""
    return plan.kv_pages * plan.page_size * shards


def pool_pages_for(num_prompts: int, prompt_len: int, decode_slots: int, mean_tokens: float,
                   utilization: float, *, page_size: int = 16, shards: int = 1) -> int:
    """``kv_pages`` (over all shards) for a pool sized to hold every slot at ``mean_tokens`` when
    ``utilization`` of it is in use, beside the prompts' own pages: per shard,
    ``prompts x ceil(Lp / page) + ceil(slots x mean / utilization / page)``."""
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization must be in (0, 1], got {utilization}")
    slots = decode_slots // shards
    prompt_pages = num_prompts // shards * -(-prompt_len // page_size)
    live = math.ceil(slots * mean_tokens / utilization / page_size)
    return (prompt_pages + live) * shards


try:  # how ``rollout.generate`` counts them, where the engine exports it
    from r1jax.rollout.engine import batch_shards  # noqa: E402
except ImportError:
    def batch_shards(sharding: Sharding | None, num_prompts: int) -> int:
        """How many batch shards ``rollout.generate`` splits these prompts over."""
        if sharding is None:
            return 1
        rows = sharding.spec(("batch",), (num_prompts,))
        axes = rows[0] if rows else ()
        axes = (axes,) if isinstance(axes, str) else tuple(axes)
        return int(np.prod([sharding.mesh.shape[a] for a in axes]))


@dataclasses.dataclass(frozen=True)
class KVSetting:
    name: str
    engine: str  # "lockstep" or "paged"
    tokens: int  # KV token slots over all shards
    shards: int
    plan: paged.PagedPlan | None = None

    def bytes_per_chip(self, cfg) -> int:
        return self.tokens // self.shards * kv_bytes_per_token(cfg)


def kv_settings(num_prompts, group_size, prompt_len, max_new_tokens, slot_counts, mean_tokens,
                utilization, page_size, shards) -> list[KVSetting]:
    out = [KVSetting("lockstep dense P·G·(Lp+T-1)", "lockstep",
                     dense_kv_tokens(num_prompts, group_size, prompt_len, max_new_tokens),
                     shards)]
    for slots in slot_counts:
        default = paged.plan(num_prompts, prompt_len, group_size, max_new_tokens,
                             decode_slots=slots, page_size=page_size, shards=shards,
                             attention="pallas_tpu")
        out.append(KVSetting(f"paged S={slots}, worst case", "paged",
                             paged_kv_tokens(default, shards), shards, default))
        pages = pool_pages_for(num_prompts, prompt_len, slots, mean_tokens, utilization,
                               page_size=page_size, shards=shards)
        try:
            sized = paged.plan(num_prompts, prompt_len, group_size, max_new_tokens,
                               decode_slots=slots, page_size=page_size, kv_pages=pages,
                               shards=shards, attention="pallas_tpu")
        except ValueError as e:  # a pool too small for one full-length sample per shard
            print(f"  (paged S={slots} at mean {mean_tokens:g}: {e})")
            continue
        out.append(KVSetting(f"paged S={slots}, mean {mean_tokens:g} @ {utilization:.0%}",
                             "paged", paged_kv_tokens(sized, shards), shards, sized))
    return out


def weight_bytes(cfg) -> int:
    return models.count_params(cfg) * jnp.dtype(cfg.weight_dtype).itemsize


def analytic_table(cfg, settings: list[KVSetting], chips: int, fsdp: int, hbm: int | None) -> str:
    whole = weight_bytes(cfg)
    sharded = whole // fsdp
    head = ("setting", "KV tokens/chip", "KV GiB/chip", f"+W/{fsdp} GiB", "fits",
            "+W whole GiB", "fits")
    widths = (34, 15, 12, 12, 6, 13, 6)
    fits = lambda n: "-" if hbm is None else ("yes" if n <= hbm else "NO")  # noqa: E731
    lines = ["".join(h.ljust(w) if i == 0 else h.rjust(w)
                     for i, (h, w) in enumerate(zip(head, widths)))]
    for s in settings:
        kv = s.bytes_per_chip(cfg)
        cells = (s.name, f"{s.tokens // s.shards:,}", gib(kv), gib(kv + sharded),
                 fits(kv + sharded), gib(kv + whole), fits(kv + whole))
        lines.append("".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))))
    lines.append(f"KV per token {kv_bytes_per_token(cfg) / 2**10:.0f} KiB "
                 f"({cfg.num_layers} layers x 2 x {cfg.num_kv_heads} kv heads x {cfg.head_dim} x "
                 f"{jnp.dtype(cfg.activation_dtype).itemsize} B); weights "
                 f"{models.count_params(cfg) / 1e9:.2f}B params x "
                 f"{jnp.dtype(cfg.weight_dtype).itemsize} B = {gib(whole)} GiB whole, "
                 f"{gib(sharded)} GiB FSDP-sharded over {fsdp}; HBM "
                 f"{'unknown' if hbm is None else gib(hbm) + ' GiB'} per chip.")
    lines.append("The lockstep engine keeps the parameters FSDP-sharded (+W/fsdp); the paged "
                 "engine's shard_map replicates them on every chip during the rollout (+W whole; "
                 "see the compiled temporaries).")
    return "\n".join(lines)


# ------------------------------------------------------------------------- the traced KV carry


def _subjaxprs(eqn):
    for value in eqn.params.values():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, jax.extend.core.ClosedJaxpr):
                yield v.jaxpr
            elif isinstance(v, jax.extend.core.Jaxpr):
                yield v


def loop_kv_carry_bytes(closed_jaxpr, cfg) -> int:
    """Bytes of the KV arrays (4-D, the cache dtype, the head dim one of the last two) that the
    largest ``while_loop`` of a traced program holds: the engine's cache as it allocates it (per
    shard inside a ``shard_map``, global outside one). A loop's operands count, carried or not
    (JAX passes a carry the loop never changes, such as the prompts' pages, as a constant), but
    not the program's own inputs (the weights). Pallas kernels' own loops are not looked into."""
    dtype, best = jnp.dtype(cfg.activation_dtype), 0

    def kv(aval):
        shape = getattr(aval, "shape", ())
        return (len(shape) == 4 and getattr(aval, "dtype", None) == dtype
                and cfg.head_dim in (shape[-1], shape[-2]))

    def walk(jaxpr):
        nonlocal best
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "pallas_call":
                continue
            if eqn.primitive.name == "while":
                inputs = set(jaxpr.invars) | set(jaxpr.constvars)
                held = {v for v in eqn.invars
                        if not hasattr(v, "val") and v not in inputs and kv(v.aval)}
                best = max(best, sum(math.prod(v.aval.shape) * dtype.itemsize for v in held))
            for sub in _subjaxprs(eqn):
                walk(sub)

    walk(closed_jaxpr.jaxpr)
    return best


def pallas_kernels(closed_jaxpr) -> tuple[str, ...]:
    """The names of the Pallas kernels a traced program calls (once each, in order)."""
    names = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "pallas_call":
                info = eqn.params.get("name_and_src_info", eqn.params.get("name", "?"))
                name = str(getattr(info, "name", info)).split()[0]
                if name not in names:
                    names.append(name)
                continue
            for sub in _subjaxprs(eqn):
                walk(sub)

    walk(closed_jaxpr.jaxpr)
    return tuple(names)


# ------------------------------------------------------------------------------------ compiled


@dataclasses.dataclass(frozen=True)
class Workload:
    num_prompts: int = 32
    group_size: int = 16
    prompt_len: int = 512
    max_new_tokens: int = 32768
    pad_id: int = 0
    sampling: SamplingParams = SamplingParams(1.0, 1.0, 0)


def abstract_inputs(cfg, sharding: Sharding | None, work: Workload):
    """``(params, prompt, mask, budgets, rng)`` as ``ShapeDtypeStruct``s, laid out as the trainer
    lays them out (parameters by ``models.param_shardings``, rows over the batch axes)."""
    shape, batch = (work.num_prompts, work.prompt_len), work.num_prompts * work.group_size
    key = jax.eval_shape(lambda: jax.random.key(0))
    if sharding is None:
        ids = jax.ShapeDtypeStruct(shape, jnp.int32)
        return (models.param_shapes(cfg), ids, ids, jax.ShapeDtypeStruct((batch,), jnp.int32),
                key)
    params = _sharded(models.param_shapes(cfg), models.param_shardings(cfg, sharding))
    ids = jax.ShapeDtypeStruct(shape, jnp.int32, sharding=sharding.named(("batch", "length"),
                                                                          shape))
    budgets = jax.ShapeDtypeStruct((batch,), jnp.int32,
                                   sharding=sharding.named(("batch",), (batch,)))
    key = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=sharding.replicated())
    return params, ids, ids, budgets, key


def _stops(cfg) -> StopCriteria:
    return StopCriteria.build([cfg.eos_token_id] if cfg.eos_token_id is not None else [], [])


def paged_fn(cfg, sharding, work: Workload, plan: paged.PagedPlan):
    shards = batch_shards(sharding, work.num_prompts)
    return paged.compiled_paged(cfg, work.sampling, _stops(cfg), work.group_size,
                                work.max_new_tokens, work.pad_id, plan,
                                sharding if shards > 1 else None)


def lockstep_fn(cfg, sharding, work: Workload, unstack: bool = False):
    return compiled_rollout(cfg, work.sampling, _stops(cfg), work.group_size,
                            work.max_new_tokens, work.pad_id, sharding, unstack)


def compile_program(name, fn, inputs, cfg, platform: str, kv_per_chip_divisor: int,
                    heap: bool = False) -> Compiled:
    """Lower and compile ``fn`` on ``inputs`` as traced for ``platform``; its bytes per chip (or
    XLA's refusal), the seconds it took, the KV its decode loop carries per chip and, with
    ``heap`` (TPU), XLA's memory-usage report."""
    start = time.perf_counter()
    with traced_for(platform):
        traced = fn.trace(*inputs)
        lowered = traced.lower()
    carry = loop_kv_carry_bytes(traced.jaxpr, cfg) // kv_per_chip_divisor
    kernels = pallas_kernels(traced.jaxpr)
    report = None
    if not heap:
        memory = program_memory(name, lambda: lowered)
    else:
        with tempfile.TemporaryDirectory() as dump:
            options = {"xla_dump_to": dump, "xla_dump_hlo_as_text": True}
            memory = program_memory(name, lambda: WithOptions(lowered, options))
            report = read_heap_report(dump)
    return Compiled(memory, cfg.num_layers, time.perf_counter() - start, carry, report, kernels)


_COLUMNS = (("args", 7), ("out", 6), ("temp", 7), ("heap", 7), ("code", 6), ("need", 8),
            ("KV", 7), ("fits", 5), ("compile", 8))
PROGRAM_HEAD = "program (GiB per chip)".ljust(46) + "".join(h.rjust(w) for h, w in _COLUMNS)


def program_row(label: str, p: ProgramMemory, seconds: str, kv: int | None, hbm,
                heap: int | None = None) -> str:
    need = need_bytes(p, heap)
    fits = "-" if hbm is None else ("yes" if need <= hbm and not p.refused else "NO")
    if p.refused:
        cells = ["-", "-", "-", "-" if heap is None else gib(heap), "-", f"{gib(need)}!"]
    else:
        cells = [gib(p.argument_bytes), gib(p.new_output_bytes), gib(p.temp_bytes),
                 "-" if heap is None else gib(heap), gib(p.code_bytes), gib(need)]
    cells += ["-" if kv is None else gib(kv), fits, seconds]
    return label.ljust(46) + "".join(c.rjust(w) for c, (_, w) in zip(cells, _COLUMNS))


def compile_section(cfg, sharding: Sharding, devices, work: Workload, settings, layer_counts,
                    hbm, programs: set[str], emit=print, lockstep_layers=None,
                    heap: bool = False) -> list[str]:
    """Compile the chosen programs at each of ``layer_counts`` (the lockstep one at
    ``lockstep_layers``, default the same) and extrapolate to the model; each line is
    ``emit``ted as it comes, and all are returned."""
    platform = devices[0].platform
    shards = batch_shards(sharding, work.num_prompts)
    full = cfg.num_layers
    lines = []

    def say(line):
        lines.append(line)
        emit(line)

    say(PROGRAM_HEAD)
    jobs = []
    if "lockstep" in programs:
        jobs += [("lockstep (compiled_rollout)", None)]
    if "paged" in programs:
        jobs += [(s.name, s) for s in settings if s.engine == "paged"
                 and ("paged-worst" in programs or "worst" not in s.name)]
    extrapolated = False
    for label, setting in jobs:
        runs = []
        counts = layer_counts if setting is not None or not lockstep_layers else lockstep_layers
        for n in counts:
            small = cfg.replace(num_layers=n)
            inputs = abstract_inputs(small, sharding, work)
            if setting is None:
                fn, divisor = lockstep_fn(small, sharding, work), shards
            else:
                fn, divisor = paged_fn(small, sharding, work, setting.plan), 1
            try:
                run = compile_program(label, fn, inputs, small, platform, divisor,
                                      heap=heap and platform == "tpu")
            except CompileError as e:
                say(f"{label} at {n} layers: DOES NOT COMPILE: {e}"[:4000])
                runs = []
                break
            runs.append(run)
            kv_analytic = (setting or settings[0]).bytes_per_chip(small)
            check = "" if run.kv_carry_bytes == kv_analytic else (
                f"  [jaxpr KV {gib(run.kv_carry_bytes)} != analytic {gib(kv_analytic)}]")
            say(program_row(f"{label} [{n} layer{'s' * (n > 1)}]", run.program,
                            f"{run.seconds:.0f} s", run.kv_carry_bytes, hbm,
                            run.heap.total_bytes if run.heap else None) + check)
            if run.program.refused:
                say(f"    XLA:TPU refused it: {run.program.note}")
            if run.heap is not None:
                say(f"    {run.heap.summary()}")
            if n == counts[-1]:
                say(f"    Pallas kernels: {', '.join(run.kernels) or 'none'}")
        if runs and runs[-1].layers != full:
            extrapolated = True
            kv = (setting or settings[0]).bytes_per_chip(cfg)
            program, heap_bytes = extrapolate(runs, full, label)
            say(program_row(f"{label} [{full} layers, extrapolated]", program, "-", kv, hbm,
                            heap_bytes))
    say("args = parameters and inputs, out = new outputs, temp = XLA temporaries summed "
        "(memory_analysis), heap = the temporaries as XLA:TPU packs them by live range (its "
        "memory-usage report; what its out-of-memory check compares with the HBM), need = args "
        "+ out + heap (temp without a heap) + code, ! = XLA:TPU refused it for want of HBM and "
        "says it needs this; KV = the KV arrays the decode loop carries (from the jaxpr, checked "
        "against the analytic count).")
    if extrapolated:
        say(f"EXTRAPOLATED: compiled at {', '.join(map(str, layer_counts))} of the model's "
            f"{full} layers (the programs unroll their layers) and every byte count scaled "
            f"linearly in the layers to {full}. XLA packs small programs differently: from 1 and "
            "2 layers the 28-layer temporaries and heaps came out 3-33% off, either way "
            f"(measured against full compiles); use --layers {full} for the real figures.")
    return lines


# ------------------------------------------------------------------------------------------ CLI


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _mesh(text: str) -> dict[str, int]:
    return {k.strip(): int(v) for k, v in (item.split("=") for item in text.split(",") if item)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="qwen2.5-7b", help="model preset (bf16)")
    p.add_argument("--topology", default="v5p:2x2x2", help="TPU topology (v5p:2x2x2 = 8 chips)")
    p.add_argument("--mesh", default="data=1,fsdp=-1,tensor=1",
                   help="mesh axes (the trainer's default: FSDP over every chip; the batch is "
                        "split over data x fsdp)")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--group-size", type=int, default=16)
    p.add_argument("--prompt-len", type=int, default=512, help="prompt bucket")
    p.add_argument("--max-new-tokens", type=int, default=32768)
    p.add_argument("--slots", default="128,256", help="paged decode slots per slice")
    p.add_argument("--page-size", type=int, default=16)
    p.add_argument("--mean", type=float, default=8192, help="mean completion tokens")
    p.add_argument("--utilization", type=float, default=0.8, help="pool fraction in use")
    p.add_argument("--layers", default="",
                   help="layer counts to compile, e.g. 1,2 (extrapolated linearly to the "
                        "model's; default: the model's own, ~4 min per paged program here)")
    p.add_argument("--lockstep-layers", default="",
                   help="layer counts for the lockstep program (default: the model's own: XLA "
                        "refuses it for want of HBM in ~30 s, before any code generation)")
    p.add_argument("--no-heap", action="store_true",
                   help="skip XLA's memory-usage report (a dump to a temporary directory)")
    p.add_argument("--compile", default="paged,lockstep",
                   help="programs to compile: paged (mean-sized pools), paged-worst (also the "
                        "worst-case pools), lockstep; 'none' for the analytic table only")
    args = p.parse_args(argv)

    cfg = models.get_config(args.preset, dtype="bfloat16", param_dtype="bfloat16")
    work = Workload(args.prompts, args.group_size, args.prompt_len, args.max_new_tokens,
                    cfg.eos_token_id or 0)
    devices = tpu_devices(args.topology)
    sharding = Sharding(make_mesh(_mesh(args.mesh), devices))
    shards = batch_shards(sharding, work.num_prompts)
    generation = args.topology.split(":")[0].split("-")[0]
    hbm = TPU_HBM_BYTES.get(generation)
    fsdp = sharding.mesh.shape["fsdp"]
    print(f"{args.preset} (bf16, {models.count_params(cfg) / 1e9:.2f}B params) on {args.topology}"
          f" ({len(devices)} chips, mesh {dict(sharding.mesh.shape)}, batch over {shards} "
          f"shards): {work.num_prompts} prompts x {work.group_size} samples = "
          f"{work.num_prompts * work.group_size} sequences, prompts {work.prompt_len} + "
          f"{work.max_new_tokens} new tokens, pages of {args.page_size}.\n")
    settings = kv_settings(work.num_prompts, work.group_size, work.prompt_len,
                           work.max_new_tokens, _ints(args.slots), args.mean, args.utilization,
                           args.page_size, shards)
    print("1. Analytic KV bytes per chip")
    print(analytic_table(cfg, settings, len(devices), fsdp, hbm))
    programs = set() if args.compile == "none" else set(args.compile.split(","))
    if "paged-worst" in programs:
        programs.add("paged")
    if programs:
        layer_counts = sorted(set(_ints(args.layers))) or [cfg.num_layers]
        print(f"\n2. Compiled for {args.topology} ahead of time (XLA:TPU + Mosaic via libtpu)")
        start = time.perf_counter()
        compile_section(cfg, sharding, devices, work, settings, layer_counts, hbm, programs,
                        emit=lambda line: print(line, flush=True),
                        lockstep_layers=sorted(set(_ints(args.lockstep_layers)))
                        or [cfg.num_layers], heap=not args.no_heap)
        print(f"(all compiles: {time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
