"""The benchmark runner: a checkpoint and a benchmark in, per-problem JSONL and reports out.

``run(config, workdir)`` writes to ``<workdir>/eval/<label>/`` (or ``eval.output_dir``):

* ``run.json`` — what is evaluated and how (checked on restart: a resumed run must be the same run);
* ``samples.jsonl`` — one line per problem with all samples, extracted answers and correctness,
  appended and fsynced after every batch;
* ``summary.json`` and ``results.md`` — the metrics over the whole file, and a markdown table.

Resumable: a killed run, started again with the same config, skips the problems already in
``samples.jsonl`` (a half-written last line is cut), regenerates nothing it has, and computes the
summary from the whole file. Since batch b always samples with the same key, the result equals that
of an uninterrupted run.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax

from r1jax import hf
from r1jax.eval.benchmarks import load_benchmark
from r1jax.eval.engine import iter_evaluate, progress_bar
from r1jax.eval.records import (EvalResult, append_records, read_records, running_accuracy, summarize,
                                write_json_atomic)
from r1jax.eval.report import markdown_report, summary_json
from r1jax.configdict import ConfigError
from r1jax.eval.run_config import BenchmarkRun, RunConfig
from r1jax.rewards import RewardPool
from r1jax.sharding import Sharding, make_mesh
from r1jax.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

RUN_FILE, SAMPLES_FILE, SUMMARY_FILE, REPORT_FILE = "run.json", "samples.jsonl", "summary.json", "results.md"
_ORBAX_MARKERS = ("_CHECKPOINT_METADATA", "_METADATA", "checkpoint", "manifest.ocdbt")


def run(cfg: RunConfig, workdir: str) -> EvalResult:
    """Evaluates ``cfg.eval.ckpt`` on ``cfg.eval.bench`` and writes the files listed above.

    Returns the result over every problem in ``samples.jsonl``.
    """
    rc = cfg.eval
    out_dir = rc.output_dir or os.path.join(workdir, "eval", rc.label)
    writer = jax.process_index() == 0
    settings = rc.settings
    check_checkpoint(rc.ckpt)
    problems = list(load_benchmark(rc.benchmark, data=rc.data_path, num_problems=rc.num_problems,
                                   difficulty=rc.difficulty, seed=rc.seed))
    manifest = {"benchmark": rc.benchmark, "label": rc.label, "checkpoint": os.path.abspath(rc.ckpt),
                "data": os.path.abspath(rc.data_path) if rc.data_path else "",
                "num_problems": len(problems), "difficulty": rc.difficulty, "seed": rc.seed,
                "sample_seed": rc.sample_seed, "dtype": rc.dtype, "settings": settings.to_json()}
    samples_path = os.path.join(out_dir, SAMPLES_FILE)
    if writer:
        os.makedirs(out_dir, exist_ok=True)
        _check_same_run(os.path.join(out_dir, RUN_FILE), manifest)
    records = read_records(samples_path, repair=writer)
    wanted = {p.id for p in problems}
    stray = [r.id for r in records if r.id not in wanted]
    if stray:
        raise ConfigError(f"{samples_path} holds problems this benchmark does not have (e.g. {stray[:3]}); "
                          "point eval.output_dir at a fresh directory")
    done = {r.id for r in records}
    if len(done) < len(records):
        raise ValueError(f"{samples_path} holds a problem twice; it was not written by this runner")
    log.info("eval %s: %d problems, %d already in %s", rc.label, len(problems), len(done), samples_path)

    if len(done) < len(problems):
        params, model_config, tokenizer, sharding = load_model(rc)
        bar = progress_bar(len(problems), len(done), rc.progress, rc.label)
        bar.set_postfix(pass1=f"{running_accuracy(records):.3f}")
        try:
            with RewardPool(rc.reward_workers, timeout_s=rc.reward_timeout_s) as pool:
                for batch in iter_evaluate(params, model_config, tokenizer, problems, settings=settings,
                                           rng=jax.random.key(rc.sample_seed), sharding=sharding,
                                           pool=pool, skip_ids=frozenset(done)):
                    if writer:
                        append_records(samples_path, batch, settings.pass_k)
                    records.extend(batch)
                    bar.update(len(batch))
                    bar.set_postfix(pass1=f"{running_accuracy(records):.3f}")
        finally:
            bar.close()

    if writer:
        records = read_records(samples_path)  # the summary is computed from the whole file
    records.sort(key=lambda r: r.index)
    metrics = summarize(records, settings)
    if writer:
        write_json_atomic(os.path.join(out_dir, SUMMARY_FILE),
                          summary_json(rc.label, rc.ckpt, metrics, settings, output_dir=out_dir))
        report = markdown_report(rc.label, rc.ckpt, metrics, settings)
        _write_text_atomic(os.path.join(out_dir, REPORT_FILE), report)
        log.info("eval %s done:\n%s", rc.label, report)
    return EvalResult(tuple(records), metrics, settings)


def check_checkpoint(path: str) -> None:
    """Raises with the fix unless ``path`` is a Hugging Face-format checkpoint directory."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"eval.ckpt: checkpoint directory {path!r} does not exist")
    names = set(os.listdir(path))
    has_weights = any(n.endswith(".safetensors") for n in names)
    if "config.json" in names and has_weights:
        return
    if names & set(_ORBAX_MARKERS) or any(n.isdigit() for n in names):
        raise ConfigError(
            f"eval.ckpt: {path} looks like an orbax training checkpoint; evaluation reads the Hugging "
            "Face format only — export the parameters with r1jax.hf.save_pretrained (config.json + "
            "safetensors) plus the tokenizer files, and point eval.ckpt at that directory")
    missing = [what for what, ok in (("config.json", "config.json" in names),
                                     ("*.safetensors weights", has_weights)) if not ok]
    raise ConfigError(
        f"eval.ckpt: {path} is not a Hugging Face-format checkpoint: no {' and no '.join(missing)} "
        f"(found: {sorted(names)[:10] or 'nothing'}); it needs config.json, *.safetensors and a "
        "tokenizer.json or sentencepiece *.model (or eval.tokenizer)")


def load_model(rc: BenchmarkRun):
    """(params, model config, tokenizer, sharding) for the run's checkpoint, on its mesh if any."""
    sharding = Sharding(make_mesh(rc.mesh)) if rc.mesh else None
    model_config, params = hf.load_pretrained(rc.ckpt, mesh=sharding.mesh if sharding else None,
                                              dtype=rc.dtype)
    tokenizer_path = rc.tokenizer or rc.ckpt
    try:
        tokenizer = load_tokenizer(tokenizer_path)
    except FileNotFoundError as e:
        raise ConfigError(f"eval.tokenizer: {e}; put tokenizer.json (with tokenizer_config.json) or a "
                          "sentencepiece .model in the checkpoint directory, or set eval.tokenizer") from None
    if tokenizer.vocab_size > model_config.vocab_size:
        raise ConfigError(f"eval.tokenizer: {tokenizer.path} has {tokenizer.vocab_size} tokens but the model "
                          f"in {rc.ckpt} only {model_config.vocab_size}; they do not belong together")
    return params, model_config, tokenizer, sharding


def _check_same_run(path: str, manifest: dict) -> None:
    """Writes ``run.json``, or checks that the one there describes this same run."""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            previous = json.load(f)
        diffs = _differences(previous, json.loads(json.dumps(manifest)))
        if diffs:
            raise ConfigError(
                f"{os.path.dirname(path)} holds an evaluation with other settings ({'; '.join(diffs[:5])}); "
                "resume with the same config, or set eval.output_dir to a new directory")
        return
    write_json_atomic(path, manifest)


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} then, {new!r} now"]


def _write_text_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
