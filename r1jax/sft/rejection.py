"""Rejection sampling (DeepSeek-R1 stage 3) and teacher traces for distillation: generate k samples
per prompt, keep the ones that pass the verifiers and filters, dedup, write an SFT dataset.

Filters, each counted per task: correct (the rule-based accuracy reward is 1; general prompts
skip it), well-formed (``<think>…</think><answer>…</answer>``), one language (the share of the
chain of thought's words in the problem's language reaches ``min_language``; a chain with no words
passes) and no mixed scripts, and a length window in tokens. Identical completions of one prompt
are kept once. Output: ``<out>/data.jsonl`` (question, prompt, response, source, id) and
``<out>/stats.json`` with the acceptance rate per task.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os

import jax

from r1jax import completions, training_run
from r1jax.sampling_request import EngineSettings, SamplingRequest
from r1jax.data import get_template
from r1jax.data.sources import DataSource, load_problems
from r1jax.policy import ModelSource
from r1jax.rewards import RewardConfig, RewardPool, check_format, think_text
from r1jax.rewards.language import language_consistency, word_scripts
from r1jax.sharding import MeshSettings

DATA_FILE, STATS_FILE = "data.jsonl", "stats.json"


@dataclasses.dataclass(frozen=True)
class SampleSettings:
    """``num_samples`` completions per prompt, ``batch_prompts`` prompts per call."""

    num_samples: int = 4
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 128
    batch_prompts: int = 32
    stop_strings: tuple[str, ...] = ("</answer>",)
    engine: EngineSettings = EngineSettings()

    @property
    def request(self) -> SamplingRequest:
        return SamplingRequest(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                               top_p=self.top_p, stop_strings=self.stop_strings,
                               engine=self.engine)


@dataclasses.dataclass(frozen=True)
class FilterSettings:
    require_correct: bool = True
    require_format: bool = True
    min_language: float = 0.95
    min_tokens: int = 1
    max_tokens: int | None = None
    max_per_prompt: int | None = None


@dataclasses.dataclass(frozen=True)
class RunConfig:
    job: str
    model: ModelSource
    output_dir: str
    name: str = "traces"
    seed: int = 0
    data: DataSource = DataSource()
    split: str = "train"
    sampling: SampleSettings = SampleSettings()
    filters: FilterSettings = FilterSettings()
    reward_workers: int = 2
    progress_bar: bool = True
    mesh: MeshSettings = MeshSettings()

    def __post_init__(self):
        if self.job != "traces":
            raise ValueError(f"job must be 'traces', got {self.job!r}")
        if self.split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {self.split!r}")


def keep_reason(text: str, num_tokens: int, correct: float | None, general: bool,
                language: str, filters: FilterSettings) -> str | None:
    """Why a sample is rejected (a counted reason), or None to keep it."""
    if filters.require_correct and not general and correct != 1.0:
        return "incorrect" if correct is not None else "not_judged"
    if filters.require_format and not check_format(text).ok:
        return "format"
    thought = think_text(text)
    scripts = set(word_scripts(thought))
    if len(scripts) > 1:
        return "mixed_scripts"
    if scripts and language_consistency(thought, language) < filters.min_language:
        return "language"
    if num_tokens < filters.min_tokens or (filters.max_tokens and num_tokens > filters.max_tokens):
        return "length"
    return None


def run(cfg: RunConfig, workdir: str) -> dict:
    done = training_run.finished(workdir, cfg)
    if done is not None:
        return done
    out_dir = cfg.output_dir or os.path.join(workdir, "traces")
    sharding, model_cfg, params, tokenizer = training_run.start(workdir, cfg, cfg.model, cfg.mesh)
    problems = list(load_problems(cfg.data, cfg.split))
    template = get_template(cfg.data.template)
    reward_cfg = RewardConfig.from_mapping({"accuracy": 1.0})
    s = cfg.sampling
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    kept_rows = []
    key = jax.random.key(cfg.seed)
    with RewardPool(cfg.reward_workers) as pool:
        bar = training_run.progress(len(problems), 0, cfg.name, cfg.progress_bar)
        for b, start in enumerate(range(0, len(problems), s.batch_prompts)):
            batch = problems[start:start + s.batch_prompts]
            done = completions.complete(
                params, model_cfg, tokenizer, completions.encode_prompts(tokenizer, template, batch),
                s.request, group_size=s.num_samples, rng=jax.random.fold_in(key, b),
                problems=batch, reward_config=reward_cfg, pool=pool, sharding=sharding)
            kept_rows += _keep(cfg, batch, [template.render(p.question) for p in batch], done,
                               counts)
            bar.update(len(batch))
            bar.set_postfix(kept=sum(c["kept"] for c in counts.values()))
        bar.close()
    stats = {"tasks": {t: dict(c, acceptance=c["kept"] / max(c["generated"], 1))
                       for t, c in sorted(counts.items())},
             "generated": sum(c["generated"] for c in counts.values()),
             "kept": len(kept_rows), "output": os.path.join(out_dir, DATA_FILE)}
    stats["acceptance"] = stats["kept"] / max(stats["generated"], 1)
    if jax.process_index() == 0:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, DATA_FILE), "w", encoding="utf-8") as f:
            for row in kept_rows:
                f.write(json.dumps(row) + "\n")
        tmp = os.path.join(out_dir, STATS_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(stats, f, indent=2)
        os.replace(tmp, os.path.join(out_dir, STATS_FILE))
    return training_run.write_summary(workdir, cfg, stats)


def _keep(cfg: RunConfig, batch, prompts: list[str], done: completions.Completions,
          counts) -> list[dict]:
    """The rows of ``batch``'s completions that pass the filters; ``counts`` per task and reason."""
    k = cfg.sampling.num_samples
    kept = []
    for p_index, problem in enumerate(batch):
        task = problem.source.split(":seed")[0] or "data"
        seen: set[str] = set()
        for g in range(k):
            row = p_index * k + g
            text = done.texts[row]
            breakdown = done.scores.breakdowns[row]
            correct = None if breakdown is None else breakdown.components.get("accuracy")
            reason = keep_reason(text, int(done.lengths_B[row]), correct, problem.general,
                                 problem.language or "en", cfg.filters)
            counts[task]["generated"] += 1
            if reason is None and text in seen:
                reason = "duplicate"
            if reason is None and cfg.filters.max_per_prompt and \
                    len(seen) >= cfg.filters.max_per_prompt:
                reason = "per_prompt_limit"
            if reason is not None:
                counts[task][reason] += 1
                continue
            seen.add(text)
            counts[task]["kept"] += 1
            kept.append({"id": problem.id, "question": problem.question,
                         "prompt": prompts[p_index], "response": text, "source": problem.source})
    return kept
