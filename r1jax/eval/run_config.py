"""The benchmark runner's config (job ``eval``): ``config.eval`` as a frozen, validated dataclass.

``r1jax.configdict.from_config(RunConfig, config)`` converts it like every job's config (typos and
wrong types name the full path); sampling fields left unset (None) take the benchmark's defaults
(``r1jax.eval.benchmarks``). Every error names the field (``eval.<name>``) and what to do.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping

from r1jax.configdict import ConfigError
from r1jax.eval.benchmarks import BENCHMARKS, get_benchmark
from r1jax.eval.settings import EvalSettings
from r1jax.models.config import DTYPES
from r1jax.rewards import RewardConfig
from r1jax.sharding import MESH_AXES

FILE_FORMATS = ("auto",) + tuple(name for name, b in BENCHMARKS.items()
                                  if b.source in ("jsonl", "gpqa", "livecodebench"))


@dataclasses.dataclass(frozen=True)
class BenchmarkRun:
    """One benchmark run (the ``eval`` block of the config).

    ``ckpt``: a Hugging Face-format directory (``config.json``, safetensors, tokenizer files) — the
    format r1jax training runs export. ``bench``: a benchmark name or a path to a ``.jsonl`` file
    (then ``format`` picks which benchmark's defaults and reader apply; ``auto``: the generic
    ``jsonl``). ``data``: the JSONL file of a file-backed benchmark (or a local HumanEval copy).
    ``num_problems``: the first N problems only (0: all; the synthetic set's size).
    ``difficulty``/``seed``: the synthetic set. Sampling: ``template``, ``num_samples`` (k),
    ``temperature``, ``top_p``, ``top_k``, ``max_new_tokens``, ``batch_size`` (prompts per generate
    call), ``pass_k``, ``stop_strings``, ``cons``, ``add_bos``; None takes the benchmark's default.
    ``sample_seed``: the sampling key. ``dtype``: cast the weights (e.g. ``bfloat16``). ``mesh``:
    mesh axis sizes (``{"fsdp": -1}``), None for one device. ``reward_workers``: judging processes
    (0: in this process); ``reward_timeout_s`` per sample; ``code_timeout_s`` per sandbox run.
    ``output_dir``: default ``<workdir>/eval/<label>``. ``progress``: the tqdm bar.
    """

    ckpt: str
    bench: str
    data: str = ""
    format: str = "auto"
    tokenizer: str = ""
    num_problems: int = 0
    difficulty: int = 2
    seed: int = 0
    sample_seed: int = 0
    template: str = "r1_zero"
    num_samples: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_new_tokens: int | None = None
    batch_size: int | None = None
    pass_k: tuple[int, ...] | None = None
    stop_strings: tuple[str, ...] | None = None
    cons: bool | None = None
    add_bos: bool = False
    dtype: str | None = None
    mesh: Mapping[str, int] | None = None
    reward_workers: int = 4
    reward_timeout_s: float = 120.0
    code_timeout_s: float = 10.0
    output_dir: str = ""
    progress: bool = True

    def __post_init__(self):
        if not self.ckpt:
            raise ConfigError("eval.ckpt is required: a Hugging Face-format checkpoint directory "
                              "(config.json + *.safetensors + tokenizer files), e.g. ckpt=/path/to/export")
        if not self.bench:
            raise ConfigError(f"eval.bench is required: one of {sorted(BENCHMARKS)} or a .jsonl path")
        if self.format not in FILE_FORMATS:
            raise ConfigError(f"eval.format {self.format!r} is not one of {FILE_FORMATS}")
        if _is_path(self.bench):
            if self.data:
                raise ConfigError(f"eval.bench is already a file ({self.bench}); leave eval.data empty")
        else:
            if self.bench not in BENCHMARKS:
                raise ConfigError(f"eval.bench {self.bench!r} is neither a benchmark ({sorted(BENCHMARKS)}) "
                                  "nor a .jsonl file")
            if self.format not in ("auto", self.bench):
                raise ConfigError(f"eval.format={self.format!r} applies to a .jsonl path in eval.bench; "
                                  f"benchmark {self.bench!r} has its own format")
        for name in ("num_problems", "reward_workers", "seed", "sample_seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"eval.{name} must be >= 0, got {getattr(self, name)}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ConfigError(f"eval.dtype {self.dtype!r} is not one of {DTYPES} (or None: as stored)")
        if self.mesh is not None and set(self.mesh) - set(MESH_AXES):
            raise ConfigError(f"eval.mesh names axes {sorted(set(self.mesh) - set(MESH_AXES))}; the mesh "
                              f"axes are {MESH_AXES} (e.g. {{'fsdp': -1}}), or None for one device")
        for name in ("reward_timeout_s", "code_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"eval.{name} must be positive, got {getattr(self, name)}")
        try:
            self.settings  # noqa: B018 — validates the sampling fields now, at start-up
        except ValueError as e:
            raise ConfigError(str(e).replace("EvalSettings.", "eval.")) from None

    @property
    def benchmark(self) -> str:
        """The benchmark whose reader and defaults apply."""
        if _is_path(self.bench):
            return "jsonl" if self.format == "auto" else self.format
        return self.bench

    @property
    def data_path(self) -> str:
        return self.bench if _is_path(self.bench) else self.data

    @property
    def label(self) -> str:
        """A short name for reports and the default output directory."""
        if _is_path(self.bench):
            stem = os.path.splitext(os.path.basename(self.bench))[0]
            return stem if self.format == "auto" else f"{self.format}-{stem}"
        if get_benchmark(self.bench).source == "synthetic":
            return f"{self.bench}-d{self.difficulty}"
        return self.bench

    @property
    def settings(self) -> EvalSettings:
        reward = RewardConfig(code_timeout_s=self.code_timeout_s)
        return EvalSettings.for_benchmark(
            self.benchmark, template=self.template, num_samples=self.num_samples,
            temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
            max_new_tokens=self.max_new_tokens, batch_size=self.batch_size, pass_k=self.pass_k,
            stop_strings=self.stop_strings, cons=self.cons, add_bos=self.add_bos, reward_config=reward)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Job ``eval``: the benchmark run described by ``eval``."""

    job: str
    eval: BenchmarkRun

    def __post_init__(self):
        if self.job != "eval":
            raise ValueError(f"job must be 'eval', got {self.job!r}")


def _is_path(bench: str) -> bool:
    return bench.endswith(".jsonl") or os.sep in bench or os.path.isfile(bench)
