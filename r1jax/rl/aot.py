"""Will a GRPO run fit? Compile its update step (and rollout) for a TPU topology on any host.

``jax.experimental.topologies`` with libtpu describes a pod slice without the hardware; lowering
the jitted programs with abstract, sharded inputs and compiling them runs XLA:TPU and Mosaic for
real, and ``memory_analysis()`` gives each chip's bytes: arguments (parameters, optimizer state,
batch), outputs, and temporaries (activations, the KV cache of the rollout). Nothing executes.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp

from r1jax import models
from r1jax.hf.config_io import load_config
from r1jax.optim import TrainState, make_optimizer
from r1jax.rl.run_config import RunConfig as GRPORunConfig
from r1jax.rl.step import GRPOBatch, grpo_step
from r1jax.sharding import Sharding, make_mesh

GiB = 1024**3
# High-bandwidth memory per chip, by TPU generation (public specifications).
TPU_HBM_BYTES = {"v4": 32 * GiB, "v5e": 16 * GiB, "v5litepod": 16 * GiB, "v5p": 95 * GiB,
                 "v6e": 32 * GiB}


@dataclasses.dataclass(frozen=True)
class ProgramMemory:
    name: str
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    code_bytes: int

    @property
    def peak_bytes(self) -> int:
        """Live at once: inputs, non-aliased outputs, temporaries and the program itself."""
        return (self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes
                + self.code_bytes)


@dataclasses.dataclass(frozen=True)
class AOTReport:
    topology: str
    chips: int
    model: str
    parameters: int
    programs: tuple[ProgramMemory, ...]
    hbm_bytes: int | None

    def fits(self) -> bool | None:
        if self.hbm_bytes is None:
            return None
        return all(p.peak_bytes <= self.hbm_bytes for p in self.programs)

    def table(self) -> str:
        lines = [f"{self.model} ({self.parameters / 1e9:.2f}B parameters) on {self.topology} "
                 f"({self.chips} chips); bytes per chip:",
                 f"{'program':<12}{'arguments':>12}{'outputs':>12}{'temporaries':>14}"
                 f"{'peak':>12}"]
        for p in self.programs:
            lines.append(f"{p.name:<12}{_gib(p.argument_bytes):>12}{_gib(p.output_bytes):>12}"
                         f"{_gib(p.temp_bytes):>14}{_gib(p.peak_bytes):>12}")
        if self.hbm_bytes is not None:
            verdict = "fits" if self.fits() else "DOES NOT FIT"
            lines.append(f"HBM per chip {_gib(self.hbm_bytes)}: {verdict}")
        return "\n".join(lines)


def _gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB"


def _memory(name: str, compiled) -> ProgramMemory:
    m = compiled.memory_analysis()
    return ProgramMemory(name, int(m.argument_size_in_bytes), int(m.output_size_in_bytes),
                         int(m.alias_size_in_bytes), int(m.temp_size_in_bytes),
                         int(m.generated_code_size_in_bytes))


def resolve_model(cfg: GRPORunConfig) -> models.ModelConfig:
    """The run's architecture: its preset, or the checkpoint's config.json when at hand."""
    if cfg.model.preset is not None:
        model_cfg = models.get_config(cfg.model.preset)
    elif cfg.model.checkpoint and os.path.isfile(os.path.join(cfg.model.checkpoint,
                                                              "config.json")):
        model_cfg = load_config(cfg.model.checkpoint)
    else:
        raise ValueError("the AOT check needs model.preset, or model.checkpoint with a config.json")
    overrides = {"remat": cfg.model.remat}
    if cfg.model.dtype:
        overrides.update(dtype=cfg.model.dtype, param_dtype=cfg.model.dtype)
    return model_cfg.replace(**overrides)


def tpu_devices(topology: str):
    from jax.experimental import topologies

    return topologies.get_topology_desc(platform="tpu", topology_name=topology).devices


def compile_for_topology(cfg: GRPORunConfig, topology: str, *, rollout: bool = True,
                         devices=None) -> AOTReport:
    """Compile the run's GRPO update (and its rollout) for ``topology`` (e.g. ``"v5e:2x2"``)."""
    devices = tpu_devices(topology) if devices is None else devices
    sharding = Sharding(make_mesh(dataclasses.asdict(cfg.mesh), devices))
    model_cfg = resolve_model(cfg)
    on_tpu = devices[0].platform == "tpu"
    grpo = dataclasses.replace(cfg.grpo, logprob_impl="pallas_tpu" if on_tpu else "xla_chunked")
    optimizer = make_optimizer(grpo.optim)

    param_sh = models.param_shardings(model_cfg, sharding)
    params = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          models.param_shapes(model_cfg), param_sh)
    # Moments follow their parameters' shardings; scalars (step counts) are replicated.
    init = jax.jit(optimizer.init).lower(params).compile()
    on_mesh = lambda sh: sh if getattr(sh, "mesh", None) == sharding.mesh else sharding.replicated()  # noqa: E731
    opt_state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=on_mesh(sh)),
                             jax.eval_shape(optimizer.init, params), init.output_shardings)
    scalar = jax.ShapeDtypeStruct((), jnp.int32, sharding=sharding.replicated())
    state = TrainState(scalar, params, opt_state, scalar, scalar)

    rows = cfg.prompts_per_step * grpo.group_size // grpo.num_minibatches
    columns = cfg.rollout.max_new_tokens
    length = cfg.data.max_prompt_tokens + columns
    updates = grpo.num_minibatches * grpo.num_iterations
    ref_inside = grpo.loss.beta > 0 and updates == 1

    def spec(shape, dtype):
        return jax.ShapeDtypeStruct(shape, dtype)

    batch = GRPOBatch(
        spec((rows, length), jnp.int32), spec((rows, length), jnp.int32),
        spec((rows, columns), jnp.int32), spec((rows,), jnp.float32),
        old_logp_BxT=None if grpo.on_policy else spec((rows, columns), jnp.float32),
        ref_logp_BxT=spec((rows, columns), jnp.float32) if grpo.loss.beta > 0 and not ref_inside
        else None)
    batch_sh = sharding.rows(batch)
    batch = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                         batch, batch_sh)
    step = functools.partial(grpo_step, cfg=grpo, model_cfg=model_cfg, optimizer=optimizer,
                             sharding=sharding)
    state_sh = jax.tree.map(lambda s: s.sharding, state)
    compiled = jax.jit(step, in_shardings=(state_sh, batch_sh, param_sh if ref_inside else None),
                       out_shardings=(state_sh, sharding.replicated()),
                       donate_argnums=(0,)).lower(state, batch,
                                                  params if ref_inside else None).compile()
    programs = [_memory("grpo_step", compiled)]
    if rollout:
        programs.append(_memory("rollout", _compile_rollout(cfg, model_cfg, params, sharding)))
    generation = topology.split(":")[0].split("-")[0]
    return AOTReport(topology, len(devices), cfg.model.preset or model_cfg.model_type,
                     models.count_params(model_cfg), tuple(programs),
                     TPU_HBM_BYTES.get(generation) if on_tpu else None)


def _compile_rollout(cfg: GRPORunConfig, model_cfg, params, sharding: Sharding):
    from r1jax.rollout.engine import compiled_rollout
    from r1jax.rollout.sampling import SamplingParams
    from r1jax.rollout.stops import StopCriteria

    fn = compiled_rollout(model_cfg, SamplingParams(cfg.rollout.temperature, cfg.rollout.top_p,
                                                    cfg.rollout.top_k), StopCriteria(),
                          cfg.grpo.group_size, cfg.rollout.max_new_tokens, 0, sharding, False)
    prompts = (cfg.prompts_per_step, cfg.data.max_prompt_tokens)
    prompt_sh = sharding.named(("batch", "length"), prompts)
    ids = jax.ShapeDtypeStruct(prompts, jnp.int32, sharding=prompt_sh)
    key = jax.eval_shape(lambda: jax.random.key(0))
    key = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=sharding.replicated())
    return fn.lower(params, ids, ids, key).compile()


def report_json(report: AOTReport) -> str:
    return json.dumps(dataclasses.asdict(report) | {"fits": report.fits()}, indent=2)
