"""Reports: the summary JSON and a markdown table (one row per benchmark) for READMEs and notes."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from r1jax.eval.settings import EvalSettings

_PERCENT_PREFIXES = ("pass@", "cons@")


def json_safe(metrics: Mapping[str, float]) -> dict[str, float | None]:
    """Metrics with NaN (nothing to average) as None, so the JSON stays standard."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def summary_json(benchmark: str, checkpoint: str, metrics: Mapping[str, float], settings: EvalSettings,
                 **extra: Any) -> dict[str, Any]:
    """What ``summary.json`` holds: what was evaluated, how, and the metrics."""
    return {"benchmark": benchmark, "checkpoint": checkpoint, "metrics": json_safe(metrics),
            "settings": settings.to_json(), **extra}


def benchmark_table(rows: Sequence[tuple[str, Mapping[str, float], EvalSettings]]) -> str:
    """A markdown table with one row per ``(benchmark, metrics, settings)``.

    Columns: problems, k, every pass@k and cons@k any row has (percent), format rate (percent),
    mean and max completion length (tokens), truncated (percent), samples not judged (count).
    """
    estimator_keys: list[str] = []
    for _, metrics, _ in rows:
        for key in metrics:
            if key.startswith(_PERCENT_PREFIXES) and key not in estimator_keys:
                estimator_keys.append(key)
    estimator_keys.sort(key=lambda key: (key.startswith("cons@"), int(key.split("@")[1])))
    header = (["benchmark", "problems", "k"] + estimator_keys
              + ["format", "mean len", "max len", "truncated", "not judged"])
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, metrics, settings in rows:
        cells = [name, _count(metrics.get("num_problems")), str(settings.num_samples)]
        cells += [_percent(metrics.get(key)) for key in estimator_keys]
        cells += [_percent(metrics.get("format_rate")), _number(metrics.get("mean_length")),
                  _count(metrics.get("max_length")), _percent(metrics.get("truncation_rate")),
                  _count(metrics.get("unjudged_samples"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_report(benchmark: str, checkpoint: str, metrics: Mapping[str, float],
                    settings: EvalSettings) -> str:
    """``results.md``: a title, the sampling settings in one line, and the table."""
    setting_line = (f"checkpoint `{checkpoint}` · template `{settings.template}` · "
                    f"k = {settings.num_samples} · temperature {settings.temperature:g} · "
                    f"top-p {settings.top_p:g}" + (f" · top-k {settings.top_k}" if settings.top_k else "")
                    + f" · up to {settings.max_new_tokens} new tokens")
    return (f"# Evaluation: {benchmark}\n\n{setting_line}\n\n"
            + benchmark_table([(benchmark, metrics, settings)])
            + "\nPercentages; pass@k is the unbiased estimator over k samples per problem, cons@k the "
              "majority vote under math-verify equivalence.\n")


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _percent(value) -> str:
    return "–" if _is_missing(value) else f"{100 * value:.1f}"


def _number(value) -> str:
    return "–" if _is_missing(value) else f"{value:.1f}"


def _count(value) -> str:
    return "–" if _is_missing(value) else str(int(value))
