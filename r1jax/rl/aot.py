"""Will a GRPO run fit? Compile every program a training step runs for a TPU topology, on any host.

``jax.experimental.topologies`` with libtpu describes a pod slice without the hardware; lowering
the jitted programs with abstract, sharded inputs and compiling them runs XLA:TPU and Mosaic for
real, and ``memory_analysis()`` gives each chip's bytes of arguments, outputs and temporaries.
Nothing executes and no parameter is materialized.

A step runs these programs (``phases``), decided as ``r1jax.rl.trainer.logprobs_for_update``
decides them:

* ``rollout``: the program of the run's rollout engine (``rollout.engine``): the lockstep one
  (``r1jax.rollout.lockstep.compiled_rollout``: prefill, then the dense KV-cache decode) or the
  paged one (``r1jax.rollout.paged.compiled_paged``: its pool sized by ``paged.plan``; an MLA
  model's pages hold its latent entries);
* ``old_logprobs``: ``r1jax.rl.step.rollout_logprobs`` with the policy, once per rollout when the
  batch is reused (several minibatches or iterations) and ``grpo.old_logprobs="recompute"``;
* ``ref_logprobs``: the same program with the reference, when β > 0 and the batch is reused
  (with one update per rollout the reference forward is inside the update instead);
* ``grpo_step``: the update (train state donated), ``num_minibatches × num_iterations`` per step;
* ``eval_rollout``: the held-out evaluation's rollout (before training, every ``eval.every``
  steps and at the end);
* ``ref_reset``: the reference reset to a copy of the policy every ``grpo.ref_update_interval``
  steps (β > 0); counted, not compiled (it is a copy): both references are live until it ends.

Around each program other arrays stay resident: the optimizer state (and the parameters when the
program does not take them), the reference copy (β > 0: the trainer keeps one from the start),
the rollout's outputs and the update batch (the trainer's ``exp`` and ``batch`` still hold the
previous step's while the next rollout runs), and the other programs' code. A phase's peak per
chip is those plus its program's arguments, outputs (less those aliased to donated inputs) and
temporaries; the run fits when every phase's peak fits the chip's HBM. Shapes are the largest a
step can take: prompts padded to ``data.max_prompt_tokens``'s bucket, all ``max_new_tokens``
completion columns. With router replay (``grpo.router_replay``) the training rollout records every
token's expert choices and the batch carries them into the log-prob forwards and the update.

The train state is laid out as ``r1jax.optim.init_train_state`` lays it out (that program, compiled
for the topology), so the optimizer moments are counted where the run puts them. XLA:TPU will not
compile a program bigger than the chip; such a refusal is a verdict, not an error: the report
carries the total the compiler says the program needs.

Before compiling, the run's start-up checks (``r1jax.run_checks.check_grpo``: prompt + new tokens
within the model's positions for the rollout and the evaluation, batch shards, FSDP) and the
rollout's prompt bucketing are applied, so a run that would stop at start-up is refused here too.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp

from r1jax import models, run_checks
from r1jax.hf.config_io import load_config
from r1jax.optim import init_train_state, make_optimizer
from r1jax.policy import check_architecture
from r1jax.rl.aot_memory import (TPU_HBM_BYTES, AOTReport, BudgetError, CompileError, Phase,
                                 ProgramMemory, chip_bytes, compiler_options, program_memory,
                                 required_bytes)  # noqa: F401  (read by tests and launch/aot.py)
from r1jax.rl.run_config import RunConfig as GRPORunConfig
from r1jax.rl.step import GRPOBatch, grpo_step, rollout_logprobs
from r1jax.rollout import paged, router_replay
from r1jax.rollout.engine import DEFAULT_PROMPT_BUCKETS, batch_shards, bucket_length
from r1jax.rollout.lockstep import compiled_rollout
from r1jax.sampling_request import EngineSettings
from r1jax.rollout.sampling import SamplingParams
from r1jax.rollout.stops import StopCriteria
from r1jax.sharding import Sharding, make_mesh

def resolve_model(cfg: GRPORunConfig) -> models.ModelConfig:
    """The run's architecture, as ``r1jax.policy.load_policy`` resolves it: the checkpoint's
    config.json when it is at hand (checked against ``model.preset``), else the preset."""
    source = cfg.model
    config_json = source.checkpoint and os.path.isfile(os.path.join(source.checkpoint,
                                                                    "config.json"))
    if config_json:
        model_cfg = load_config(source.checkpoint, source.dtype)
        if source.preset is not None:
            try:
                check_architecture(model_cfg, source)
            except ValueError as e:  # the run stops there too
                raise BudgetError(str(e)) from None
        return model_cfg.replace(remat=source.remat)
    if source.preset is None:
        raise ValueError("the AOT check needs model.preset, or model.checkpoint with a config.json")
    overrides = {"remat": source.remat}
    if source.dtype:
        overrides.update(dtype=source.dtype, param_dtype=source.dtype)
    return models.get_config(source.preset, **overrides)


def tpu_devices(topology: str):
    from jax.experimental import topologies

    return topologies.get_topology_desc(platform="tpu", topology_name=topology).devices


PHASES = ("rollout", "old_logprobs", "ref_logprobs", "grpo_step", "eval_rollout")


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """Which programs a step runs and with what shapes: the trainer's decisions, in one place."""

    prompt_width: int  # the rollout's prompt columns (data.max_prompt_tokens, bucketed)
    columns: int  # completion columns of the update batch (at most rollout.max_new_tokens)
    rows: int  # rollout rows, prompts_per_step × group_size
    minibatch_rows: int
    updates: int  # num_minibatches × num_iterations
    old_logprobs: str | None  # None (on-policy), "recompute" (a program) or "sampler"
    ref_program: bool  # β > 0 with the batch reused: reference log-probs once per rollout
    ref_in_update: bool  # β > 0 with one update per rollout: the reference forward is inside
    evaluates: bool  # held-out evaluation runs (eval.num_problems > 0)

    @property
    def phases(self) -> tuple[str, ...]:
        run = {"rollout": True, "old_logprobs": self.old_logprobs == "recompute",
               "ref_logprobs": self.ref_program, "grpo_step": True,
               "eval_rollout": self.evaluates}
        return tuple(name for name in PHASES if run[name])


def plan_step(cfg: GRPORunConfig) -> StepPlan:
    """Mirrors ``r1jax.rl.trainer``: ``logprobs_for_update`` for the log-prob programs, ``update``
    for the minibatches, ``HeldOut`` for the evaluation, ``rollout.generate`` for the prompts'
    bucket (raising, as it would, for a prompt budget past the largest)."""
    g = cfg.grpo
    try:
        width = bucket_length(cfg.data.max_prompt_tokens, DEFAULT_PROMPT_BUCKETS)
    except ValueError as e:
        raise BudgetError(f"data.max_prompt_tokens = {cfg.data.max_prompt_tokens}: {e}; lower "
                          "data.max_prompt_tokens") from None
    rows = cfg.prompts_per_step * g.group_size
    updates = g.num_minibatches * g.num_iterations
    beta = g.loss.beta > 0
    old = "sampler" if g.old_logprobs == "sampler" else (None if g.on_policy else "recompute")
    return StepPlan(width, cfg.rollout.max_new_tokens, rows, rows // g.num_minibatches, updates,
                    old, beta and updates > 1, beta and updates == 1, cfg.eval.num_problems > 0)


def check_budgets(cfg: GRPORunConfig, model_cfg: models.ModelConfig, sharding: Sharding) -> None:
    """What the run refuses at start-up (``run_checks.grpo_problems``: prompt + new tokens within
    the model's positions for the rollout and the held-out evaluation, batch shards, FSDP; the
    template's check needs the tokenizer and is left to the run), before anything compiles."""
    problems = run_checks.grpo_problems(cfg, model_cfg, sharding)
    if problems:
        raise BudgetError(f"the run would stop at start-up: {len(problems)} setting(s) cannot "
                          "run on this model and mesh:" + "".join(f"\n  - {p}" for p in problems))


@contextlib.contextmanager
def traced_for(platform: str):
    """Trace as ``platform`` would: r1jax picks some code paths by ``jax.default_backend()`` (host
    RoPE tables and a matmul orientation on CPU, Pallas kernels under ``impl="auto"`` on TPU), and
    on this host that says "cpu" while the programs are for the TPU. Only r1jax reads the module
    attribute (jax's own code asks its backend registry), and only while lowering."""
    original = jax.default_backend
    jax.default_backend = lambda: platform
    try:
        yield
    finally:
        jax.default_backend = original


def compile_for_topology(cfg: GRPORunConfig, topology: str, *, programs=None,
                         devices=None) -> AOTReport:
    """Compile every program a step of this run runs for ``topology`` (e.g. ``"v5e:2x2"``) and
    count each chip's bytes, phase by phase. ``programs`` (names from ``PHASES``) compiles only
    those of the run's phases; the report names the rest. Raises ``BudgetError`` before compiling
    for a run that would stop at start-up, ``CompileError`` for a program that does not compile
    (other than for want of HBM, which is a verdict)."""
    model_cfg = resolve_model(cfg)
    plan = plan_step(cfg)
    wanted = plan.phases
    if programs is not None:
        unknown = sorted(set(programs) - set(PHASES))
        if unknown:
            raise ValueError(f"unknown programs {unknown}; choose from {PHASES}")
        wanted = tuple(name for name in plan.phases if name in set(programs))
    devices = tpu_devices(topology) if devices is None else devices
    sharding = Sharding(make_mesh(dataclasses.asdict(cfg.mesh), devices))
    check_budgets(cfg, model_cfg, sharding)
    platform = devices[0].platform
    with traced_for(platform):
        report = _compile(cfg, topology, model_cfg, plan, wanted, sharding, platform,
                          len(devices))
    return dataclasses.replace(report, skipped=tuple(n for n in plan.phases if n not in wanted))


def _sharded(tree, shardings):
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        tree, shardings)


def _compile(cfg, topology, model_cfg, plan: StepPlan, wanted, sharding: Sharding,
             platform: str, chips: int) -> AOTReport:
    g = cfg.grpo
    optimizer = make_optimizer(g.optim)
    param_sh = models.param_shardings(model_cfg, sharding)
    params = _sharded(models.param_shapes(model_cfg), param_sh)
    # The train state as the trainer creates it (``init_train_state``), laid out as that program
    # lays it out, and so as the update keeps it (its shardings are the state's).
    # Inside the traced program the parameters are tracers, without shardings: pass them.
    create = lambda p: init_train_state(p, optimizer, param_sh)  # noqa: E731
    try:
        placed = jax.jit(create).lower(params).compile(
            compiler_options=compiler_options(platform)).output_shardings
    except Exception as e:
        raise CompileError(f"init_train_state: compiling it for the topology failed: {e}") from e
    on_mesh = lambda sh: sh if getattr(sh, "mesh", None) == sharding.mesh else sharding.replicated()  # noqa: E731
    state = _sharded(jax.eval_shape(create, params), jax.tree.map(on_mesh, placed))
    params = state.params
    P = chip_bytes(params)
    O = chip_bytes(state) - P  # optimizer state and the step counters
    R = P if g.loss.beta > 0 else 0
    T, Lp = plan.columns, plan.prompt_width
    batch_of = functools.partial(update_batch, cfg, model_cfg, plan, sharding)
    full = batch_of(plan.rows)
    field = {f.name: chip_bytes(getattr(full, f.name)) for f in dataclasses.fields(full)}
    B = sum(field.values())
    E = chip_bytes(rollout_outputs(cfg, model_cfg, plan, sharding))

    stops = StopCriteria.build([model_cfg.eos_token_id] if model_cfg.eos_token_id is not None
                               else [], [])
    lowerings = {
        "rollout": lambda: _lower_rollout(
            model_cfg, params, sharding, platform, stops,
            SamplingParams(cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.top_k),
            g.group_size, cfg.rollout.max_new_tokens, cfg.prompts_per_step, Lp,
            cfg.rollout.engine, g.router_replay),
        "grpo_step": lambda: jax.jit(
            functools.partial(grpo_step, cfg=g, model_cfg=model_cfg, optimizer=optimizer,
                              sharding=sharding),
            in_shardings=(jax.tree.map(lambda s: s.sharding, state),
                          sharding.rows(batch_of(plan.minibatch_rows)),
                          param_sh if plan.ref_in_update else None),
            out_shardings=(jax.tree.map(lambda s: s.sharding, state), sharding.replicated()),
            donate_argnums=(0,)).lower(state, batch_of(plan.minibatch_rows),
                                       params if plan.ref_in_update else None),
        "eval_rollout": lambda: _lower_rollout(
            model_cfg, params, sharding, platform, stops,
            SamplingParams(cfg.eval.temperature, cfg.eval.top_p, 0), cfg.eval.num_samples,
            cfg.eval.max_new_tokens, min(max(1, cfg.prompts_per_step), cfg.eval.num_problems),
            Lp, cfg.rollout.engine),
    }
    # Old-policy and reference log-probs: one program (the reference has the policy's shapes).
    logprobs = jax.jit(functools.partial(
        rollout_logprobs, model_cfg=model_cfg, completion_length=T, temperature=g.temperature,
        impl=g.logprob_impl, sharding=sharding))
    lowerings["old_logprobs"] = lowerings["ref_logprobs"] = lambda: logprobs.lower(
        params, full.tokens_BxL, full.attention_mask_BxL, experts_BxLxYxA=full.experts_BxLxYxA)
    programs: dict[str, ProgramMemory] = {}
    for name in wanted:
        shared = programs.get("old_logprobs") if name == "ref_logprobs" else None
        # The same executable: its compile time is counted once, under old_logprobs.
        programs[name] = (dataclasses.replace(shared, name=name, compile_s=0.0) if shared else
                          program_memory(name, lowerings[name]))

    # Every compiled program stays loaded (jit caches it); old and reference log-probs share one.
    executable = {name: "logprobs" if name.endswith("_logprobs") else name for name in programs}
    code = {executable[name]: p.code_bytes for name, p in programs.items()}

    def others(name):
        return ("code of the other programs", sum(code.values()) - code[executable[name]])

    before_old = field["completion_mask_BxT"] + field["advantages_B"] + field["sampler_logp_BxT"]
    if plan.old_logprobs == "sampler":
        before_old += field["old_logp_BxT"]
    resident = {
        # The trainer's ``exp`` and ``batch`` still hold the previous step's while the next
        # rollout runs (they are rebound only when it returns).
        "rollout": [("optimizer state", O), ("reference", R), ("previous rollout", E),
                    ("previous update batch", B)],
        "old_logprobs": [("optimizer state", O), ("reference", R), ("rollout", E),
                         ("rest of the batch", before_old)],
        "ref_logprobs": [("parameters", P), ("optimizer state", O), ("rollout", E),
                         ("rest of the batch", B - field["tokens_BxL"]
                          - field["attention_mask_BxL"] - field["experts_BxLxYxA"]
                          - field["ref_logp_BxT"])],
        # With one minibatch the minibatch is the batch: the update's own arguments.
        "grpo_step": [("reference", R if plan.ref_program else 0), ("rollout", E),
                      ("update batch", B if g.num_minibatches > 1 else 0)],
        "eval_rollout": [("optimizer state", O), ("reference", R), ("rollout", E),
                         ("update batch", B)],
    }
    runs = {"rollout": "1/step" + (f" (+{cfg.max_refills} refills)" if cfg.dynamic_sampling
                                   else ""),
            "old_logprobs": "1/step", "ref_logprobs": "1/step",
            "grpo_step": f"{plan.updates}/step",
            "eval_rollout": f"every {cfg.eval.every} steps" if cfg.eval.every else "start, end"}
    phases = [Phase(name, runs[name], p, tuple(resident[name]) + (others(name),))
              for name, p in programs.items()]
    if R and g.ref_update_interval:
        # ``ref_params = tree.map(jnp.copy, state.params)``: the new copy is whole before the old
        # one is dropped. Counted (copies need no temporaries), not compiled.
        copy = ProgramMemory("ref_reset", P, R, 0, 0, 0)
        phases.append(Phase("ref_reset", f"every {g.ref_update_interval} steps", copy, (
            ("optimizer state", O), ("old reference", R), ("rollout", E), ("update batch", B),
            ("code of the programs", sum(code.values())))))
    shapes = dict(prompts=cfg.prompts_per_step, group_size=g.group_size, prompt_width=Lp,
                  max_new_tokens=T, minibatches=g.num_minibatches,
                  minibatch_rows=plan.minibatch_rows, iterations=g.num_iterations)
    generation = topology.split(":")[0].split("-")[0]
    return AOTReport(topology, chips, cfg.model.preset or model_cfg.model_type,
                     models.count_params(model_cfg), shapes,
                     dict(parameters=P, optimizer=O, reference=R), tuple(phases),
                     TPU_HBM_BYTES.get(generation) if platform == "tpu" else None)


def update_batch(cfg: GRPORunConfig, model_cfg: models.ModelConfig, plan: StepPlan,
                 sharding: Sharding, rows: int) -> GRPOBatch:
    """The update's batch of ``rows`` rows (abstract, rows over the batch axes) as the trainer
    builds it: the log-probs the plan needs and, for router replay, the sampler's expert choices
    aligned with the tokens (``r1jax.rl.batch``)."""
    T, L = plan.columns, plan.prompt_width + plan.columns
    ints = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32)  # noqa: E731
    floats = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)  # noqa: E731
    b = GRPOBatch(
        ints(rows, L), ints(rows, L), ints(rows, T), floats(rows),
        old_logp_BxT=None if plan.old_logprobs is None else floats(rows, T),
        ref_logp_BxT=floats(rows, T) if plan.ref_program else None,
        sampler_logp_BxT=floats(rows, T) if cfg.grpo.loss.tis_cap is not None else None,
        experts_BxLxYxA=_expert_record(model_cfg, rows, L) if cfg.grpo.router_replay else None)
    return _sharded(b, sharding.rows(b))


def rollout_outputs(cfg: GRPORunConfig, model_cfg: models.ModelConfig, plan: StepPlan,
                    sharding: Sharding) -> tuple:
    """The step's Rollout (tokens, lengths, mask, log-probs, stopped; prompts and their mask;
    for router replay the prompts' and the completions' expert choices), abstract, rows over
    the batch axes as the sampler lays them out."""
    rows, prompts, T, Lp = plan.rows, cfg.prompts_per_step, plan.columns, plan.prompt_width
    of = jax.ShapeDtypeStruct
    out = (of((rows, T), jnp.int32), of((rows,), jnp.int32), of((rows, T), jnp.bool_),
           of((rows, T), jnp.float32), of((rows,), jnp.bool_), of((prompts, Lp), jnp.int32),
           of((prompts, Lp), jnp.int32))
    if cfg.grpo.router_replay:
        out += (_expert_record(model_cfg, prompts, Lp), _expert_record(model_cfg, rows, T))
    return _sharded(out, sharding.rows(out))


def _expert_record(model_cfg: models.ModelConfig, rows: int, length: int):
    """``[rows, length, Y, A]`` expert choices, abstract, as the rollout records them."""
    return jax.eval_shape(lambda: router_replay.empty_record(model_cfg, rows, length))


def _lower_rollout(model_cfg, params, sharding: Sharding, platform: str, stops: StopCriteria,
                   sampling: SamplingParams, group_size: int, max_new_tokens: int,
                   num_prompts: int, prompt_width: int, engine: EngineSettings,
                   record_experts: bool = False):
    """The rollout program ``rollout.generate`` runs for this engine, lowered (recording the
    expert choices for router replay: the training rollout's, not the evaluation's)."""
    shape = (num_prompts, prompt_width)
    if engine.kind == "paged":
        shards = batch_shards(sharding, num_prompts)
        pool = paged.plan(num_prompts, prompt_width, group_size, max_new_tokens,
                          decode_slots=engine.decode_slots, page_size=engine.page_size,
                          kv_pages=engine.kv_pages, shards=shards)
        fn = paged.compiled_paged(model_cfg, sampling, stops, group_size, max_new_tokens, 0, pool,
                                  sharding if shards > 1 else None,
                                  record_experts=record_experts)
    else:
        fn = compiled_rollout(model_cfg, sampling, stops, group_size, max_new_tokens, 0,
                              sharding, platform == "cpu", record_experts)
    ids = jax.ShapeDtypeStruct(shape, jnp.int32, sharding=sharding.named(("batch", "length"),
                                                                          shape))
    rows = (num_prompts * group_size,)
    budgets = jax.ShapeDtypeStruct(rows, jnp.int32, sharding=sharding.named(("batch",), rows))
    key = jax.eval_shape(lambda: jax.random.key(0))
    key = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=sharding.replicated())
    return fn.lower(params, ids, ids, budgets, key)


def report_json(report: AOTReport) -> str:
    out = dataclasses.asdict(report)
    for phase, p in zip(out["phases"], report.phases):
        phase.update(resident_bytes=p.resident_bytes, peak_bytes=p.peak_bytes)
    return json.dumps(out | {"peak_bytes": report.peak_bytes, "peak_phase": report.peak_phase,
                             "fits": report.fits()}, indent=2)
