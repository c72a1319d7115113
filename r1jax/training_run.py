"""The skeleton every training job runs in: GRPO, SFT, the reward model and pretraining.

Plain functions, called in this order by each job's ``run(cfg, workdir)``:

1. ``finished(workdir, cfg)`` — the summary of this same run if it already finished (a rerun of a
   finished run returns it and does nothing else; a run lengthened by a larger ``steps`` resumes);
2. ``start(workdir, cfg, model, mesh)`` — the config recorded in (or checked against) the work
   directory, the mesh, and the policy loaded onto it;
3. ``open_checkpoints`` / ``resume`` — the latest checkpoint's arrays and metadata, if any;
4. the job's loop under ``Stopper``: after each step, ``stopper.should_stop()`` (SIGTERM, or the
   time budget spent) and ``checkpoint_due`` decide a save; a SIGTERM saves at the current step
   and ends the run without exporting, so the rerun resumes exactly there;
5. ``write_summary`` — ``summary.json`` (with the config), written last by process 0.

The distributed runtime is started once, by ``r1jax.pipeline.run``, before any job.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from typing import Any

import jax
from tqdm import tqdm

from r1jax.checkpoint import Checkpointer, run_guard
from r1jax.configdict import to_dict
from r1jax.policy import ModelSource, load_policy
from r1jax.sharding import MeshSettings, Sharding, make_mesh

SUMMARY_FILE = "summary.json"


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def finished(workdir: str, cfg: Any) -> dict | None:
    """The summary of a run with this config that finished in ``workdir``, else None."""
    path = os.path.join(workdir, SUMMARY_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        summary = json.load(f)
    return summary if summary.get("config") == _json(to_dict(cfg)) else None


def write_summary(workdir: str, cfg: Any, summary: dict) -> dict:
    """``summary`` plus the config, as ``<workdir>/summary.json`` (process 0, atomically)."""
    summary = {**summary, "config": to_dict(cfg)}
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, SUMMARY_FILE)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2, default=str)
        os.replace(path + ".tmp", path)
    return _json(summary)


def start(workdir: str, cfg: Any, model: ModelSource | None = None,
          mesh: MeshSettings = MeshSettings()):
    """Record (or check) the run's config in ``workdir`` and build the mesh; with ``model``, load
    the policy onto it. Returns ``(sharding, model_cfg, params, tokenizer)`` (the last three None
    without ``model``)."""
    run_guard(workdir, cfg)
    sharding = Sharding(make_mesh(dataclasses.asdict(mesh)))
    if model is None:
        return sharding, None, None, None
    return (sharding, *load_policy(model, sharding))


def open_checkpoints(workdir: str, max_to_keep: int) -> Checkpointer:
    return Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=max_to_keep)


def resume(checkpointer: Checkpointer, like: dict) -> tuple[int, dict, dict | None]:
    """``(step, arrays, meta)`` of the latest checkpoint (arrays shaped and sharded like
    ``like``), or ``(0, like, None)`` for a fresh run."""
    step = checkpointer.latest_step()
    if step is None:
        return 0, like, None
    arrays, meta = checkpointer.restore(step, like)
    return step, arrays, meta


def checkpoint_due(steps_done: int, total_steps: int, every: int) -> bool:
    """On the schedule, and always after the last step."""
    return steps_done == total_steps or (every > 0 and steps_done % every == 0)


class Stopper:
    """Why a training loop should stop early: SIGTERM (a preemption: save and exit, the rerun
    resumes) or its time budget (``time_budget_s``; the run then finishes as if it had ended).

    A context manager: SIGTERM is caught while it is open (in the main thread only)."""

    def __init__(self, time_budget_s: float | None = None):
        self.time_budget_s = time_budget_s
        self._sigterm = threading.Event()
        self._previous = None
        self._start = time.perf_counter()

    def __enter__(self) -> "Stopper":
        self._start = time.perf_counter()
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, lambda *_: self._sigterm.set())
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    @property
    def preempted(self) -> bool:
        return self._sigterm.is_set()

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self._start

    @property
    def out_of_time(self) -> bool:
        return bool(self.time_budget_s) and self.elapsed_s >= self.time_budget_s

    def should_stop(self) -> bool:
        return self.preempted or self.out_of_time


def progress(total: int, initial: int, desc: str, enabled: bool = True, **kwargs):
    """A tqdm bar on process 0 (disabled elsewhere and unless ``enabled``)."""
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True,
                disable=not (enabled and jax.process_index() == 0), **kwargs)

