"""Start-up checks: a run's settings against its model and its mesh, before anything compiles.

A job calls its check right after the policy is loaded (``training_run.start``) — ``check_grpo``,
``check_sft``, ``check_reward_model``, ``check_traces``, or ``check_run`` by ``cfg.job`` — and a
wrong run stops there, before anything compiles, instead of deep inside XLA or, worse, running on. Each is a pure function of the run config, the
model config (the checkpoint's ``config.json``; ``r1jax.hf.load_config`` reads it without the
weights) and the ``Sharding``; every problem found is reported at once, one per line, each naming
the field and the fix, in a ``RunCheckError``.

* **Positions.** Prompt plus new tokens must fit the model's positions: ``max_position_embeddings``,
  or what Llama 3 rope scaling extends it to (``factor × original_max_position_embeddings``).
  Past the end the RoPE table reads NaN — nothing fails, the samples are garbage.
* **Batch shards.** Every batch the mesh splits — rollout rows, minibatch and microbatch rows, the
  held-out evaluation's rows, SFT rows, reward-model pairs — must divide over the devices the
  ``batch`` logical axis maps to (``r1jax.sharding.DEFAULT_RULES``: ``data × fsdp``). Otherwise
  the batch is silently replicated and every device computes (and caches) all of it.
* **FSDP.** ``hidden_size`` must divide over ``fsdp``, or every weight is replicated.
* **Template.** Chat markers a template writes (``<|im_start|>``) must be single tokens of the
  tokenizer; otherwise the model reads them as plain text it has never seen as a turn marker.
"""
from __future__ import annotations

import math
import re
from typing import Any

from r1jax.configdict import ConfigError
from r1jax.data.templates import get_template
from r1jax.models.config import ModelConfig
from r1jax.sharding import Sharding

_CHAT_MARKER = re.compile(r"<\|[^|<>\s]+\|>|<｜[^｜<>]+｜>")


class RunCheckError(ConfigError):
    """Settings that cannot run as intended on this model and mesh; one problem per line."""


def position_limit(model_cfg: ModelConfig) -> int:
    """How many positions the model covers: ``max_position_embeddings``, or more when Llama 3
    rope scaling extends its original context."""
    limit = model_cfg.max_position_embeddings
    scaling = model_cfg.rope_scaling
    if scaling is not None:
        limit = max(limit, int(scaling.factor * scaling.original_max_position_embeddings))
    return limit


def batch_shards(sharding: Sharding) -> tuple[int, str]:
    """How many ways the ``batch`` logical axis splits on this mesh, and which axes it spans."""
    target = dict(sharding.rules).get("batch")
    axes = (target,) if isinstance(target, str) else tuple(target or ())
    axes = tuple(a for a in axes if a in sharding.mesh.shape)
    sizes = [int(sharding.mesh.shape[a]) for a in axes]
    spans = " × ".join(f"{a}={s}" for a, s in zip(axes, sizes)) or "none"
    return math.prod(sizes), spans


def _model_name(source: Any) -> str:
    if getattr(source, "checkpoint", None):
        return f"model.checkpoint {source.checkpoint}"
    return f"model.preset {getattr(source, 'preset', None)!r}"


def _positions(problems: list[str], parts: list[tuple[str, int]], model_cfg: ModelConfig,
               source: Any, fix_field: str) -> None:
    """``sum(parts)`` positions must fit the model; the fix lowers ``fix_field`` (one of them)."""
    limit, needed = position_limit(model_cfg), sum(v for _, v in parts)
    if needed <= limit:
        return
    how = "max_position_embeddings" + (" in its config.json" if getattr(source, "checkpoint", None)
                                       else "")
    if limit > model_cfg.max_position_embeddings:
        how = "extended by its rope scaling"
    total = " + ".join(n for n, _ in parts) + " = "
    if len(parts) > 1:
        total += " + ".join(str(v) for _, v in parts) + " = "
    rest = needed - dict(parts)[fix_field]
    fix = (f"lower {fix_field} to {limit - rest} or less" if rest < limit else
           f"lower {' and '.join(n for n, _ in parts)} to fit {limit} together")
    problems.append(f"{total}{needed} positions, but {_model_name(source)} has {limit} ({how}); "
                    f"{fix}")


def _divides(problems: list[str], rows: int, what: str, shards: int, spans: str, fix: str) -> None:
    if shards > 1 and rows % shards:
        problems.append(f"{what} = {rows} rows do not divide over the {shards} devices of the "
                        f"batch axis (mesh {spans}), so every device would compute all of them; "
                        f"{fix}")


def _next_multiple(value: int, step: int) -> int:
    return step * max(1, -(-value // step))


def _fsdp(problems: list[str], model_cfg: ModelConfig, sharding: Sharding) -> None:
    fsdp = int(sharding.mesh.shape.get("fsdp", 1))
    if fsdp > 1 and model_cfg.hidden_size % fsdp:
        divisors = [d for d in range(fsdp, 0, -1) if model_cfg.hidden_size % d == 0]
        problems.append(f"the model's hidden_size {model_cfg.hidden_size} does not divide over "
                        f"mesh.fsdp = {fsdp}, so every weight would be replicated on every device; "
                        f"set mesh.fsdp to a divisor of it (e.g. {divisors[0]}) and mesh.data to "
                        "the rest of the devices")


def _template(problems: list[str], template: str, tokenizer: Any) -> None:
    if tokenizer is None:
        return
    try:
        text = get_template(template, tokenizer=tokenizer).text
    except ValueError as e:
        problems.append(f"data.template: {e}")
        return
    for marker in sorted(set(_CHAT_MARKER.findall(text))):
        if tokenizer.token_to_id(marker) is None:
            problems.append(f"data.template {template!r} writes {marker!r}, which is not a token "
                            f"of {tokenizer.path}; the model would read it as plain text. Use "
                            "data.template=r1_zero for a base model, or 'tokenizer' (the "
                            "tokenizer's own chat template) for a chat model")
            return


def _raise(job: str, problems: list[str]) -> None:
    if problems:
        raise RunCheckError(f"{job}: {len(problems)} setting(s) cannot run on this model and mesh:"
                            + "".join(f"\n  - {p}" for p in problems))


def grpo_problems(cfg: Any, model_cfg: ModelConfig, sharding: Sharding,
                  tokenizer: Any = None) -> list[str]:
    """What ``check_grpo`` reports, as a list (empty: the run can start)."""
    problems: list[str] = []
    prompt = ("data.max_prompt_tokens", cfg.data.max_prompt_tokens)
    _positions(problems, [prompt, ("rollout.max_new_tokens", cfg.rollout.max_new_tokens)],
               model_cfg, cfg.model, "rollout.max_new_tokens")
    if cfg.eval.num_problems > 0:
        _positions(problems, [prompt, ("eval.max_new_tokens", cfg.eval.max_new_tokens)],
                   model_cfg, cfg.model, "eval.max_new_tokens")
    shards, spans = batch_shards(sharding)
    g, prompts = cfg.grpo, cfg.prompts_per_step
    rows = prompts * g.group_size
    step = shards // math.gcd(shards, g.group_size)
    _divides(problems, rows, f"prompts_per_step × grpo.group_size = {prompts} × {g.group_size}",
             shards, spans, f"make prompts_per_step a multiple of {step} (e.g. "
             f"{_next_multiple(prompts, step)}) or use fewer devices for the batch")
    if rows % shards == 0 and g.num_minibatches > 1:
        fits = max(m for m in range(1, g.num_minibatches + 1)
                   if rows % m == 0 and (rows // m) % shards == 0)
        _divides(problems, rows // g.num_minibatches, f"a minibatch (rollout rows / "
                 f"grpo.num_minibatches = {rows} / {g.num_minibatches})", shards, spans,
                 f"lower grpo.num_minibatches to {fits} or raise prompts_per_step")
    per_minibatch = rows // g.num_minibatches
    if per_minibatch % shards == 0 and g.num_microbatches > 1:
        _divides(problems, per_minibatch // g.num_microbatches, f"a microbatch (minibatch rows "
                 f"/ grpo.num_microbatches = {per_minibatch} / {g.num_microbatches})", shards,
                 spans, "lower grpo.num_microbatches")
    if cfg.eval.num_problems > 0:
        k, eval_prompts = cfg.eval.num_samples, max(1, prompts)
        _divides(problems, eval_prompts * k, f"a held-out evaluation batch (prompts_per_step × "
                 f"eval.num_samples = {eval_prompts} × {k})", shards, spans,
                 f"make eval.num_samples a multiple of {shards // math.gcd(shards, eval_prompts)}")
    overlong = cfg.rewards.overlong_max_tokens
    if overlong is not None and overlong > cfg.rollout.max_new_tokens:
        problems.append(f"rewards.overlong_max_tokens = {overlong} exceeds rollout.max_new_tokens "
                        f"= {cfg.rollout.max_new_tokens}: no completion can reach it; set it to "
                        f"{cfg.rollout.max_new_tokens} (DAPO's L_max is the generation budget)")
    if cfg.grpo.router_replay and not model_cfg.is_moe:
        problems.append(f"grpo.router_replay replays a mixture of experts' routing, but the "
                        f"model ({model_cfg.model_type}) is dense and has none; set "
                        "grpo.router_replay=False")
    _fsdp(problems, model_cfg, sharding)
    _template(problems, cfg.data.template, tokenizer)
    return problems


def check_grpo(cfg: Any, model_cfg: ModelConfig, sharding: Sharding, tokenizer: Any = None) -> None:
    """A GRPO run (``r1jax.rl.run_config.RunConfig``): rollout and held-out budgets, rows over the
    batch shards, router replay on a dense model, FSDP, the template's chat markers. Raises
    ``RunCheckError``."""
    _raise("grpo", grpo_problems(cfg, model_cfg, sharding, tokenizer))


def check_sft(cfg: Any, model_cfg: ModelConfig, sharding: Sharding, tokenizer: Any = None) -> None:
    """An SFT run (``r1jax.sft.train.RunConfig``): a packed row's length (an example may fill it,
    and its positions start at 0) within the model's positions; ``batch_rows`` and its
    microbatches over the batch shards."""
    problems: list[str] = []
    _positions(problems, [("data.seq_len", cfg.data.seq_len)], model_cfg, cfg.model,
               "data.seq_len")
    shards, spans = batch_shards(sharding)
    micro = cfg.sft.num_microbatches
    _divides(problems, cfg.batch_rows, "batch_rows", shards, spans,
             f"make batch_rows a multiple of {shards}")
    if cfg.batch_rows % micro:
        problems.append(f"batch_rows = {cfg.batch_rows} does not split into sft.num_microbatches "
                        f"= {micro}; choose a divisor of {cfg.batch_rows}")
    elif micro > 1 and not cfg.batch_rows % shards:
        _divides(problems, cfg.batch_rows // micro, f"a microbatch (batch_rows / "
                 f"sft.num_microbatches = {cfg.batch_rows} / {micro})", shards, spans,
                 "lower sft.num_microbatches")
    _fsdp(problems, model_cfg, sharding)
    _template(problems, cfg.data.template, tokenizer)
    _raise("sft", problems)


def check_reward_model(cfg: Any, model_cfg: ModelConfig, sharding: Sharding,
                       tokenizer: Any = None) -> None:
    """A reward-model run (``r1jax.rm.train.RunConfig``): ``data.max_tokens`` within the model's
    positions; each microbatch's chosen and rejected rows over the batch shards."""
    problems: list[str] = []
    _positions(problems, [("data.max_tokens", cfg.data.max_tokens)], model_cfg, cfg.model,
               "data.max_tokens")
    shards, spans = batch_shards(sharding)
    rows = 2 * cfg.batch_pairs // cfg.num_microbatches
    step = shards * cfg.num_microbatches // math.gcd(2, shards)
    _divides(problems, rows, f"a microbatch's chosen and rejected rows (2 × batch_pairs / "
             f"num_microbatches = 2 × {cfg.batch_pairs} / {cfg.num_microbatches})", shards, spans,
             f"make batch_pairs a multiple of {step}")
    _fsdp(problems, model_cfg, sharding)
    _raise("reward_model", problems)


def check_traces(cfg: Any, model_cfg: ModelConfig, sharding: Sharding,
                 tokenizer: Any = None) -> None:
    """Rejection sampling / teacher traces (``r1jax.sft.rejection.RunConfig``): the prompt budget
    plus ``sampling.max_new_tokens`` within the model's positions; each call's rows over the
    batch shards."""
    problems: list[str] = []
    s = cfg.sampling
    _positions(problems, [("data.max_prompt_tokens", cfg.data.max_prompt_tokens),
                          ("sampling.max_new_tokens", s.max_new_tokens)], model_cfg, cfg.model,
               "sampling.max_new_tokens")
    shards, spans = batch_shards(sharding)
    step = shards // math.gcd(shards, s.num_samples)
    _divides(problems, s.batch_prompts * s.num_samples, f"sampling.batch_prompts × "
             f"sampling.num_samples = {s.batch_prompts} × {s.num_samples}", shards, spans,
             f"make sampling.batch_prompts a multiple of {step}")
    _fsdp(problems, model_cfg, sharding)
    _template(problems, cfg.data.template, tokenizer)
    _raise("traces", problems)


CHECKS = {"grpo": check_grpo, "sft": check_sft, "reward_model": check_reward_model,
          "traces": check_traces}


def check_run(cfg: Any, model_cfg: ModelConfig, sharding: Sharding, tokenizer: Any = None) -> None:
    """The check of ``cfg.job`` (none for jobs without one). With ``model_cfg`` from
    ``r1jax.hf.load_config`` it runs before any weight is read."""
    check = CHECKS.get(getattr(cfg, "job", None))
    if check is not None:
        check(cfg, model_cfg, sharding, tokenizer)
