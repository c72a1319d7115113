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
import numpy as np
from tqdm import tqdm

from r1jax import distributed, rollout
from r1jax.configdict import ConfigError, from_config
from r1jax.data import get_template
from r1jax.data.sources import DataSource, load_problems
from r1jax.policy import ModelSource, load_policy
from r1jax.rewards import check_format, think_text
from r1jax.rewards.combine import RewardConfig, RewardInput
from r1jax.rewards.language import language_consistency, word_scripts
from r1jax.rewards.pool import RewardPool, score_batch
from r1jax.sharding import MeshSettings, Sharding, make_mesh

DATA_FILE, STATS_FILE = "data.jsonl", "stats.json"


@dataclasses.dataclass(frozen=True)
class SampleSettings:
    num_samples: int = 4
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 128
    batch_prompts: int = 32
    stop_strings: tuple[str, ...] = ("</answer>",)


@dataclasses.dataclass(frozen=True)
class FilterSettings:
    require_correct: bool = True
    require_format: bool = True
    min_language: float = 0.95
    min_tokens: int = 1
    max_tokens: int | None = None
    max_per_prompt: int | None = None


@dataclasses.dataclass(frozen=True)
class TraceRunConfig:
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


def run(config, workdir: str) -> dict:
    try:
        cfg = from_config(TraceRunConfig, config)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    out_dir = cfg.output_dir or os.path.join(workdir, "traces")
    if os.path.isfile(os.path.join(out_dir, STATS_FILE)):
        with open(os.path.join(out_dir, STATS_FILE), encoding="utf-8") as f:
            return json.load(f)  # this stage already finished
    sharding = Sharding(make_mesh(dataclasses.asdict(cfg.mesh)))
    model_cfg, params, tokenizer = load_policy(cfg.model, sharding)
    problems = list(load_problems(cfg.data, cfg.split))
    template = get_template(cfg.data.template)
    reward_cfg = RewardConfig.from_mapping({"accuracy": 1.0})
    s = cfg.sampling
    stop_ids = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    kept_rows = []
    key = jax.random.key(cfg.seed)
    with RewardPool(cfg.reward_workers) as pool:
        bar = tqdm(total=len(problems), desc=cfg.name,
                   disable=not (cfg.progress_bar and distributed.is_main_process()))
        for b, start in enumerate(range(0, len(problems), s.batch_prompts)):
            batch = problems[start:start + s.batch_prompts]
            prompts = [template.render(p.question) for p in batch]
            out = rollout.generate(
                params, model_cfg, [tokenizer.encode(t) for t in prompts],
                rng=jax.random.fold_in(key, b), max_new_tokens=s.max_new_tokens,
                group_size=s.num_samples, temperature=s.temperature, top_p=s.top_p,
                stop_ids=stop_ids, stop_strings=s.stop_strings, tokenizer=tokenizer,
                pad_id=tokenizer.pad_id, sharding=sharding)
            tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
            texts = [tokenizer.decode(tokens[i, :lengths[i]].tolist())
                     for i in range(len(tokens))]
            scores = score_batch([RewardInput.from_problem(batch[i // s.num_samples], t)
                                  for i, t in enumerate(texts)], reward_cfg, pool)
            for p_index, problem in enumerate(batch):
                task = problem.source.split(":seed")[0] or "data"
                seen: set[str] = set()
                for g in range(s.num_samples):
                    row = p_index * s.num_samples + g
                    breakdown = scores.breakdowns[row]
                    correct = None if breakdown is None else breakdown.components.get("accuracy")
                    reason = keep_reason(texts[row], int(lengths[row]), correct, problem.general,
                                         problem.language or "en", cfg.filters)
                    counts[task]["generated"] += 1
                    if reason is None and texts[row] in seen:
                        reason = "duplicate"
                    if reason is None and cfg.filters.max_per_prompt and \
                            len(seen) >= cfg.filters.max_per_prompt:
                        reason = "per_prompt_limit"
                    if reason is not None:
                        counts[task][reason] += 1
                        continue
                    seen.add(texts[row])
                    counts[task]["kept"] += 1
                    kept_rows.append({"id": problem.id, "question": problem.question,
                                      "prompt": prompts[p_index], "response": texts[row],
                                      "source": problem.source})
            bar.update(len(batch))
            bar.set_postfix(kept=sum(c["kept"] for c in counts.values()))
        bar.close()
    stats = {"tasks": {t: dict(c, acceptance=c["kept"] / max(c["generated"], 1))
                       for t, c in sorted(counts.items())},
             "generated": sum(c["generated"] for c in counts.values()),
             "kept": len(kept_rows), "output": os.path.join(out_dir, DATA_FILE)}
    stats["acceptance"] = stats["kept"] / max(stats["generated"], 1)
    if distributed.is_main_process():
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, DATA_FILE), "w", encoding="utf-8") as f:
            for row in kept_rows:
                f.write(json.dumps(row) + "\n")
        tmp = os.path.join(out_dir, STATS_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(stats, f, indent=2)
        os.replace(tmp, os.path.join(out_dir, STATS_FILE))  # written last: marks the stage done
    return stats
