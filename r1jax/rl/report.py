"""What a GRPO run reports: per-step rollout statistics, and at the end its curves and summary."""
from __future__ import annotations

import os

import numpy as np

from r1jax.metrics import markdown_table, plot_curves
from r1jax.rl.collect import ScoredRollout


def rollout_metrics(scored: ScoredRollout, budget: int) -> dict[str, float]:
    """Per-step reward, accuracy, format and length statistics of a scored rollout."""
    def mean(x):
        x = np.asarray(x, np.float64)
        x = x[~np.isnan(x)]
        return float(x.mean()) if x.size else float("nan")

    out = {
        "reward": mean(scored.rewards_PxG),
        "response_length": float(scored.lengths.mean()),
        "response_length_max": float(scored.lengths.max()),
        "think_length": float(scored.think_lengths.mean()),
        "truncation_rate": float(np.mean(~scored.stopped.astype(bool)
                                         & (scored.lengths >= budget))),
        "unjudged": float(np.isnan(scored.rewards_PxG).sum()),
    }
    for name, values in scored.components.items():
        out[name] = mean(values)
    out.update({k: v for k, v in scored.metrics.items() if k.endswith(("errors", "timeouts",
                                                                       "crashes"))})
    return out


def example_samples(scored: ScoredRollout, problems, group_size: int, count: int) -> list[dict]:
    """The first sample of the first ``count`` groups, for ``samples.jsonl``."""
    def reward(x):
        x = float(x)
        return None if np.isnan(x) else x

    return [{"question": problems[i // group_size].question, "completion": scored.texts[i],
             "reward": reward(scored.rewards_PxG.flat[i])}
            for i in range(0, len(scored.texts), group_size)][:count]


def write_markdown(workdir: str, name: str, *, steps_done: int, prompts: int, group_size: int,
                   train_seconds: float, initial: dict | None, final: dict) -> None:
    """``curves.png`` and ``summary.md`` (process 0 only calls this), and the table printed."""
    plot_curves(workdir, os.path.join(workdir, "curves.png"), title=name)
    keys = ["pass@1", "format_rate", "mean_length", "truncation_rate"]
    rows = [[k, initial.get(k, float("nan")) if initial else "(resumed)", final.get(k)]
            for k in keys]
    text = (f"# {name}\n\n{steps_done} GRPO steps, {prompts} prompts × {group_size} samples "
            f"per step, {train_seconds:.0f} s.\n\n"
            + markdown_table(["held-out metric", "before RL", "after RL"], rows)
            + "\n![curves](curves.png)\n")
    with open(os.path.join(workdir, "summary.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text.split("![curves]")[0].rstrip() + f"\n\nWritten to {workdir}: summary.md, curves.png, "
          "metrics.jsonl, eval.jsonl, export/", flush=True)
