"""Jobs chained from an experiment config: the one function ``launch/run.py`` calls.

``config.job`` picks the job: ``grpo`` (R1-Zero / reasoning RL), ``sft`` (cold start,
rejection-sampling SFT, distillation), ``traces`` (rejection sampling / teacher traces),
``reward_model``, ``eval`` (a checkpoint on a benchmark), ``pretrain`` (the tiny base model), or
``stages``: several of these in order (DeepSeek-R1's pipeline), each in ``<workdir>/<stage>``,
where ``{workdir}`` in any string setting names the pipeline's work directory (so a stage reads an
earlier stage's export) and a stage that finished is not run again. A GRPO run whose base
checkpoint is missing first runs the experiment named by ``model.pretrain_config``.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any

import jax

from r1jax.distributed import DistributedConfig, initialize

JOBS = ("grpo", "sft", "traces", "reward_model", "eval", "pretrain", "stages")
DONE_FILE = "stage_done.json"


def load_experiment(spec: str):
    """``get_config(arg)`` of ``path/to/experiment.py[:arg]`` (the ``--config`` syntax)."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"experiment file {path!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(
        "r1jax_experiment_" + os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def default_workdir(config_spec: str) -> str:
    """``runs/<experiment>[_<arg>]`` for ``experiments/<experiment>.py[:<arg>]``."""
    path, _, arg = config_spec.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    if arg:
        name += "_" + "".join(c if c.isalnum() or c in "-.=" else "_" for c in arg)
    return os.path.join("runs", name)


def read_summary(workdir: str) -> dict:
    """A finished run's ``summary.json``."""
    import json

    path = os.path.join(workdir, "summary.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: the run has no summary (did it finish?)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _distributed_config(config) -> DistributedConfig:
    section = config.get("distributed") if hasattr(config, "get") else None
    if not section:
        return DistributedConfig()
    from r1jax.configdict import from_config

    return from_config(DistributedConfig, section, "config.distributed")


def run(config: Any, workdir: str) -> dict:
    """Start the distributed runtime, log the devices, and run ``config.job`` in ``workdir``."""
    job = config.get("job") if hasattr(config, "get") else None
    if job not in JOBS:
        raise ValueError(f"config.job is {job!r}; expected one of {JOBS}")
    initialize(_distributed_config(config))
    if jax.process_index() == 0:
        devices = jax.devices()
        print(f"[r1jax] job={job} workdir={workdir} processes={jax.process_count()} "
              f"devices={len(devices)}×{devices[0].device_kind}", flush=True)
    if job == "stages":
        return _run_stages(config, workdir)
    _ensure_base_model(config)
    if job == "eval":
        from r1jax import eval as r1eval

        return r1eval.run(config, workdir)
    if job == "sft":
        from r1jax.sft import train as sft_train

        return sft_train.run(config, workdir)
    if job == "traces":
        from r1jax.sft import rejection

        return rejection.run(config, workdir)
    if job == "reward_model":
        from r1jax import rm

        return rm.run(config, workdir)
    if job == "pretrain":
        from r1jax import pretrain

        return pretrain.run(config, workdir)
    from r1jax.rl.run_config import GRPORunConfig
    from r1jax.rl.trainer import train

    return train(GRPORunConfig.from_config(config), workdir)


def _resolve(value: Any, workdir: str) -> Any:
    if isinstance(value, str):
        return value.replace("{workdir}", workdir)
    if isinstance(value, dict):
        return {k: _resolve(v, workdir) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve(v, workdir) for v in value)
    return value


def _run_stages(config, workdir: str) -> dict:
    """Each stage of ``config.order`` in turn; finished stages are skipped."""
    import json

    import ml_collections

    summaries = {}
    for name in config.order:
        if name not in config.stages:
            raise ValueError(f"config.order names stage {name!r}, which config.stages lacks")
        stage_dir = os.path.join(workdir, name)
        done = os.path.join(stage_dir, DONE_FILE)
        if os.path.isfile(done):
            with open(done, encoding="utf-8") as f:
                summaries[name] = json.load(f)
            print(f"[r1jax] stage {name}: already done", flush=True)
            continue
        print(f"[r1jax] stage {name}", flush=True)
        stage = ml_collections.ConfigDict(_resolve(config.stages[name].to_dict(), workdir))
        summary = run(stage, stage_dir)
        summary = dict(getattr(summary, "metrics", summary))  # an evaluation's EvalResult
        summaries[name] = json.loads(json.dumps(summary, default=str))
        if jax.process_index() == 0:
            os.makedirs(stage_dir, exist_ok=True)
            with open(done, "w", encoding="utf-8") as f:
                json.dump(summaries[name], f, indent=2)
    if jax.process_index() == 0:
        _write_stages_summary(workdir, summaries)
    return summaries


def _write_stages_summary(workdir: str, summaries: dict) -> None:
    """``summary.json`` (every stage's summary) and ``summary.md``: one row per stage with the
    held-out metrics it ends with (an evaluation's own, or a training run's final evaluation)."""
    import json

    from r1jax.metrics import markdown_table

    keys = ("pass@1", "format_rate", "mean_length")
    rows = []
    for name, summary in summaries.items():
        final = summary.get("final") if isinstance(summary.get("final"), dict) else summary
        seconds = summary.get("train_seconds")
        rows.append([name] + [final.get(k, "") if isinstance(final.get(k), (int, float)) else ""
                              for k in keys] + ["" if seconds is None else seconds])
    table = markdown_table(["stage", *keys, "train seconds"], rows)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summaries, f, indent=2)
    with open(os.path.join(workdir, "summary.md"), "w", encoding="utf-8") as f:
        f.write(table)
    print(table, flush=True)


def _ensure_base_model(config) -> None:
    """Pretrain a missing base checkpoint with the experiment that produces it
    (``model.pretrain_config``), whatever the job that starts from it."""
    model = config.get("model") if hasattr(config, "get") else None
    checkpoint = model.get("checkpoint") if model is not None else None
    producer = model.get("pretrain_config") if model is not None else None
    if not checkpoint or not producer or os.path.isdir(checkpoint):
        return
    print(f"[r1jax] {checkpoint} is missing: producing it with {producer}", flush=True)
    run(load_experiment(producer), default_workdir(producer))
    if not os.path.isdir(checkpoint):
        raise FileNotFoundError(f"{producer} did not produce {checkpoint}")
