"""Run metrics: a JSONL log and TensorBoard events per step, curves as a PNG, a markdown summary.

Only process 0 writes. On resume the JSONL log is cut back to the restored step, so a resumed run
ends with exactly the rows of an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Mapping, Sequence

import jax

METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.jsonl"
SAMPLES_FILE = "samples.jsonl"


def _clean(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_jsonl(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def truncate_after(path: str, step: int) -> None:
    """Drop rows logged after ``step`` (they will be produced again by the resumed run)."""
    rows = [r for r in read_jsonl(path) if r.get("step", -1) <= step]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)


class MetricsWriter:
    """Appends ``{"step": s, **metrics}`` rows to JSONL files and scalars to TensorBoard."""

    def __init__(self, workdir: str, *, tensorboard: bool = True, resume_step: int | None = None):
        self.workdir = workdir
        self.enabled = jax.process_index() == 0
        self._tb = None
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        for name in (METRICS_FILE, EVAL_FILE, SAMPLES_FILE):
            path = os.path.join(workdir, name)
            if resume_step is None:
                open(path, "w").close()
            else:
                truncate_after(path, resume_step)
        if tensorboard:
            from tensorboardX import SummaryWriter

            # TensorBoard itself keeps the latest event per step, so a resumed run may rewrite them.
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, Any], file: str = METRICS_FILE,
              prefix: str = "") -> None:
        if not self.enabled:
            return
        row = {"step": int(step), **{k: _clean(v) for k, v in metrics.items()}}
        with open(os.path.join(self.workdir, file), "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(prefix + key, value, step)

    def samples(self, step: int, samples: Iterable[Mapping[str, Any]]) -> None:
        for sample in samples:
            self.write(step, sample, SAMPLES_FILE)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def plot_curves(workdir: str, out_png: str, *, title: str = "") -> None:
    """The paper's Figures 2–3 for this run: held-out pass@1, reward, and mean response length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = read_jsonl(os.path.join(workdir, METRICS_FILE))
    evals = read_jsonl(os.path.join(workdir, EVAL_FILE))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = [
        (axes[0], [("eval", evals, "pass@1", "held-out pass@1"),
                   ("train", train, "accuracy", "train accuracy")], "accuracy"),
        (axes[1], [("train", train, "reward", "mean reward"),
                   ("train", train, "format", "format rate")], "reward"),
        (axes[2], [("train", train, "response_length", "mean response length"),
                   ("train", train, "think_length", "mean think length")], "tokens"),
    ]
    for ax, series, ylabel in panels:
        for _, rows, key, label in series:
            points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if points:
                ax.plot(*zip(*points), label=label, marker="o" if len(points) < 20 else None)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
