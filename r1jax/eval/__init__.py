"""Evaluation: pass@1 over k samples, unbiased pass@k, cons@k, benchmark runs and reports.

* ``pass_at_k(n, c, k)`` — the unbiased estimator ``1 - C(n-c, k) / C(n, k)``.
* ``majority_vote(answers)`` — the majority answer under math-verify equivalence (cons@k).
* ``evaluate(params, model_config, tokenizer, problems, settings=EvalSettings(...), rng=...)`` —
  in memory, for the trainer's periodic held-out evaluation; returns an ``EvalResult``.
* ``run(config, workdir)`` — a checkpoint on a benchmark, with per-problem JSONL, ``summary.json``
  and a markdown table, resumable (``experiments/eval.py``).

The estimators, settings, benchmark table, records and reports are host code and are imported
eagerly; ``evaluate``/``run`` (which import jax) load on first use, so that reward-pool workers,
which import ``r1jax.eval.estimators`` to run majority votes, never import jax.
"""
from r1jax.eval.benchmarks import BENCHMARKS, Benchmark, get_benchmark, load_benchmark
from r1jax.eval.estimators import Vote, answers_equal, majority_vote, mean_pass_at_k, pass_at_k, vote
from r1jax.eval.records import EvalResult, ProblemRecord, SampleRecord, read_records, summarize
from r1jax.eval.report import benchmark_table, markdown_report
from r1jax.eval.settings import EvalSettings

_LAZY = {
    "evaluate": "r1jax.eval.engine", "iter_evaluate": "r1jax.eval.engine",
    "judge": "r1jax.eval.engine", "run": "r1jax.eval.runner", "check_checkpoint": "r1jax.eval.runner",
    "RunConfig": "r1jax.eval.run_config", "BenchmarkRun": "r1jax.eval.run_config",
    "ConfigError": "r1jax.configdict",
}

__all__ = [
    "BENCHMARKS", "Benchmark", "BenchmarkRun", "ConfigError", "EvalResult", "EvalSettings", "ProblemRecord", "RunConfig",
    "SampleRecord", "Vote", "answers_equal", "benchmark_table", "check_checkpoint", "evaluate", "get_benchmark",
    "iter_evaluate", "judge", "load_benchmark", "majority_vote", "markdown_report",
    "mean_pass_at_k", "pass_at_k", "read_records", "run", "summarize", "vote",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'r1jax.eval' has no attribute {name!r}")
