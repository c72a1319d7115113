"""The one table of jobs, and the stage chain: what ``launch/run.py`` calls.

``config.job`` picks the job; each is a module with a ``RunConfig`` (a frozen dataclass the
config becomes, through ``r1jax.configdict.from_config``) and ``run(cfg, workdir) -> summary``:

* ``grpo`` — R1-Zero / reasoning RL (``r1jax.rl.trainer``);
* ``sft`` — cold start, rejection-sampling SFT, distillation (``r1jax.sft.train``);
* ``traces`` — rejection sampling / teacher traces (``r1jax.sft.rejection``);
* ``reward_model`` — the preference reward model (``r1jax.rm.train``);
* ``eval`` — a checkpoint on a benchmark (``r1jax.eval.runner``);
* ``pretrain`` — the tiny base model (``r1jax.pretrain.run``);
* ``stages`` — several of these in order, each in ``<workdir>/<stage>`` (DeepSeek-R1's
  pipeline, ``r1jax.stages``).

A job whose ``model.checkpoint`` is missing first runs the experiment named by
``model.pretrain_config``. The distributed runtime (``config.distributed``) is started once, here.
"""
from __future__ import annotations

import importlib
import json
import os
from typing import Any, Mapping

import jax

from r1jax import training_run
from r1jax.configdict import ConfigError, from_config, load_experiment
from r1jax.distributed import DistributedConfig, initialize

JOBS = {
    "grpo": "r1jax.rl.trainer",
    "sft": "r1jax.sft.train",
    "traces": "r1jax.sft.rejection",
    "reward_model": "r1jax.rm.train",
    "eval": "r1jax.eval.runner",
    "pretrain": "r1jax.pretrain.run",
    "stages": "r1jax.stages",
}

__all__ = ["JOBS", "default_workdir", "load_experiment", "read_summary", "run"]


def run(config: Any, workdir: str) -> dict:
    """Start the distributed runtime, log the devices, and run ``config.job`` in ``workdir``."""
    raw = _as_dict(config)
    job = raw.get("job")
    if job not in JOBS:
        raise ConfigError(f"config.job is {job!r}; expected one of {sorted(JOBS)}")
    initialize(from_config(DistributedConfig, raw.pop("distributed", None) or {},
                           "config.distributed"))
    if jax.process_index() == 0:
        devices = jax.devices()
        print(f"[r1jax] job={job} workdir={workdir} processes={jax.process_count()} "
              f"devices={len(devices)}×{devices[0].device_kind}", flush=True)
    _ensure_base_model(raw)
    module = importlib.import_module(JOBS[job])
    return module.run(from_config(module.RunConfig, raw), workdir)


def _as_dict(config: Any) -> dict:
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if isinstance(config, Mapping):
        return dict(config)
    raise ConfigError(f"expected an experiment config (a ConfigDict), got {type(config).__name__}")


def default_workdir(config_spec: str) -> str:
    """``runs/<experiment>[_<arg>]`` for ``experiments/<experiment>.py[:<arg>]``."""
    path, _, arg = config_spec.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    if arg:
        name += "_" + "".join(c if c.isalnum() or c in "-.=" else "_" for c in arg)
    return os.path.join("runs", name)


def read_summary(workdir: str) -> dict:
    """A finished run's ``summary.json``."""
    path = os.path.join(workdir, training_run.SUMMARY_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: the run has no summary (did it finish?)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _ensure_base_model(config: dict) -> None:
    """Pretrain a missing base checkpoint with the experiment that produces it
    (``model.pretrain_config``), whatever the job that starts from it."""
    model = config.get("model")
    if not isinstance(model, Mapping):
        return
    checkpoint, producer = model.get("checkpoint"), model.get("pretrain_config")
    if not checkpoint or not producer or os.path.isdir(checkpoint):
        return
    print(f"[r1jax] {checkpoint} is missing: producing it with {producer}", flush=True)
    run(load_experiment(producer), default_workdir(producer))
    if not os.path.isdir(checkpoint):
        raise FileNotFoundError(f"{producer} did not produce {checkpoint}")
