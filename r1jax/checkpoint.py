"""Checkpoints of a training run: orbax, asynchronous and atomic, restored exactly.

A checkpoint holds the train state (step, params, optimizer state, skip counters), any other arrays
the run needs back (the reference parameters when they differ from the policy), and JSON metadata
(the data sampler's position, the best held-out score, the config). Orbax writes each step to a
temporary directory and renames it when complete, so a run killed mid-save keeps its previous
checkpoint. ``run_guard`` checks that a work directory belongs to the same experiment. When to
save, and SIGTERM, are the run skeleton's (``r1jax.training_run``).
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from r1jax.configdict import to_dict

# Settings that may change between a run and its resumption (lengthening it, logging more).
RESUMABLE_CHANGES = ("steps", "logging", "checkpoint", "eval.every", "distributed", "name")


class Checkpointer:
    """Save and restore ``(arrays, meta)`` pairs in ``directory`` by step."""

    def __init__(self, directory: str, *, max_to_keep: int = 2, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=async_save)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, arrays: Any, meta: dict, *, force: bool = False) -> None:
        self._manager.save(step, args=ocp.args.Composite(
            arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)), force=force)

    def restore(self, step: int, like: Any) -> tuple[Any, dict]:
        """Arrays shaped, typed and sharded like ``like`` (concrete or abstract arrays)."""
        abstract = jax.tree.map(_abstract, like)
        out = self._manager.restore(step, args=ocp.args.Composite(
            arrays=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return out["arrays"], out["meta"]

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _abstract(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def run_guard(workdir: str, config: Any) -> None:
    """Record ``config`` in ``workdir``, or refuse a work directory made by a different one."""
    path = os.path.join(workdir, "config.json")
    current = to_dict(config)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        mine, theirs = _flatten(json.loads(json.dumps(current))), _flatten(saved)
        for key in sorted(set(mine) | set(theirs)):
            if any(key == c or key.startswith(c + ".") for c in RESUMABLE_CHANGES):
                continue
            if mine.get(key) != theirs.get(key):
                raise ValueError(
                    f"work directory {workdir} holds a run with a different config ({key}: "
                    f"{theirs.get(key)!r} there, {mine.get(key)!r} now); resume it with the same "
                    "config, or pass a new --workdir")
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(current, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
