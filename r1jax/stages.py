"""The stage chain (job ``stages``): several jobs in order, DeepSeek-R1's pipeline.

Each stage of ``order`` runs in ``<workdir>/<stage>`` through ``r1jax.pipeline.run``, like a job of
its own; ``{workdir}`` in any string setting names the chain's work directory, so a stage reads an
earlier stage's export. A stage that finished returns its summary without running again
(``r1jax.training_run.finished``), so a rerun of the chain resumes at the first unfinished stage.
``<workdir>/summary.md`` holds one row per stage.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import jax

from r1jax import training_run


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """``stages``: name → a job's config; ``order``: the names, in the order they run."""

    job: str
    order: tuple[str, ...]
    stages: Mapping[str, Any]
    name: str = "stages"
    seed: int = 0

    def __post_init__(self):
        if self.job != "stages":
            raise ValueError(f"job must be 'stages', got {self.job!r}")
        missing = [name for name in self.order if name not in self.stages]
        if missing:
            raise ValueError(f"order names stage {missing[0]!r}, which stages lacks "
                             f"(stages: {sorted(self.stages)})")


def run(cfg: RunConfig, workdir: str) -> dict:
    done = training_run.finished(workdir, cfg)
    if done is not None:
        return done
    # Each stage goes back through the dispatcher: the chain is made of jobs.
    from r1jax import pipeline

    summaries = {}
    for name in cfg.order:
        print(f"[r1jax] stage {name}", flush=True)
        summary = pipeline.run(resolve_workdir(dict(cfg.stages[name]), workdir),
                               os.path.join(workdir, name))
        summary = dict(getattr(summary, "metrics", summary))  # an evaluation's EvalResult
        summaries[name] = json.loads(json.dumps(summary, default=str))
    if jax.process_index() == 0:
        _write_table(workdir, summaries)
    return training_run.write_summary(workdir, cfg, {"stages": summaries})


def resolve_workdir(value: Any, workdir: str) -> Any:
    if isinstance(value, str):
        return value.replace("{workdir}", workdir)
    if isinstance(value, dict):
        return {k: resolve_workdir(v, workdir) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(resolve_workdir(v, workdir) for v in value)
    return value


def _write_table(workdir: str, summaries: dict) -> None:
    """``summary.md``: one row per stage with the held-out metrics it ends with (an evaluation's
    own, or a training run's final evaluation)."""
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
    with open(os.path.join(workdir, "summary.md"), "w", encoding="utf-8") as f:
        f.write(table)
    print(table, flush=True)
