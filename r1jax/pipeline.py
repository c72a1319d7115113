"""Jobs chained from an experiment config: the one function ``launch/run.py`` calls.

``config.job`` picks the job: ``grpo`` (R1-Zero / reasoning RL), ``eval`` (a checkpoint on a
benchmark), ``pretrain`` (the tiny base model). A GRPO run whose base checkpoint is missing first
runs the experiment named by ``model.pretrain_config`` that produces it.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any

import jax

from r1jax.distributed import DistributedConfig, initialize

JOBS = ("grpo", "eval", "pretrain")


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
    if job == "eval":
        from r1jax import eval as r1eval

        return r1eval.run(config, workdir)
    if job == "pretrain":
        from r1jax import pretrain

        return pretrain.run(config, workdir)
    from r1jax.rl.run_config import GRPORunConfig
    from r1jax.rl.trainer import train

    cfg = GRPORunConfig.from_config(config)
    _ensure_base_model(cfg)
    return train(cfg, workdir)


def _ensure_base_model(cfg) -> None:
    """Pretrain a missing base checkpoint with the experiment that produces it."""
    source = cfg.model
    if source.checkpoint is None or os.path.isdir(source.checkpoint):
        return
    if not source.pretrain_config:
        raise FileNotFoundError(f"model.checkpoint {source.checkpoint!r} does not exist")
    print(f"[r1jax] {source.checkpoint} is missing: producing it with {source.pretrain_config}",
          flush=True)
    pretrain_config = load_experiment(source.pretrain_config)
    run(pretrain_config, default_workdir(source.pretrain_config))
    if not os.path.isdir(source.checkpoint):
        raise FileNotFoundError(f"{source.pretrain_config} did not produce {source.checkpoint}")
