"""What an evaluation samples and how it judges: one frozen, validated dataclass.

The GRPO trainer builds one for its periodic held-out evaluation; the benchmark runner builds one
from the benchmark's defaults (``r1jax.eval.benchmarks``) and the config's overrides.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from r1jax.sampling_request import EngineSettings, SamplingRequest
from r1jax.data import get_template
from r1jax.eval.benchmarks import get_benchmark
from r1jax.rewards import RewardConfig

# Weights replaced by these for judging: correctness (accuracy) and the format rate, nothing else.
JUDGE_WEIGHTS = (("accuracy", 1.0), ("format", 0.0))


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """Sampling and judging settings of one evaluation.

    ``num_samples`` (k) completions per problem are drawn at ``temperature``/``top_p``/``top_k``,
    up to ``max_new_tokens`` each, ending at the tokenizer's end-of-sequence token or at any of
    ``stop_strings``. ``batch_size`` prompts go to the rollout engine at once (``batch_size × k``
    rows). ``pass_k`` lists the k of the pass@k to report (default ``(1, num_samples)``); ``cons``
    adds cons@``num_samples`` (majority vote) on problems with a checkable final answer.
    ``reward_config`` supplies the judging options — code timeout, sandbox, default language; its
    weights are replaced by accuracy (correctness) plus format (reported, unweighted), code partial
    credit is off and ``think_prefilled`` follows the template. ``add_bos`` prepends the tokenizer's
    BOS token to every prompt (Llama base models expect it; templates that spell it do not).
    ``engine`` picks the rollout engine (``r1jax.sampling_request.EngineSettings``).
    """

    template: str = "r1_zero"
    num_samples: int = 8
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 0
    max_new_tokens: int = 32_768
    batch_size: int = 8
    stop_strings: tuple[str, ...] = ("</answer>",)
    pass_k: tuple[int, ...] = ()
    cons: bool = True
    add_bos: bool = False
    reward_config: RewardConfig = RewardConfig()
    engine: EngineSettings = EngineSettings()

    def __post_init__(self):
        get_template(self.template)  # raises naming the choices
        for name in ("num_samples", "max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"EvalSettings.{name} must be a whole number >= 1, got {value!r}")
        object.__setattr__(self, "stop_strings", tuple(str(s) for s in self.stop_strings))
        try:
            self.request  # noqa: B018 — the sampling fields, checked as every request is
        except ValueError as e:
            raise ValueError(f"EvalSettings.{e}") from None
        pass_k = tuple(int(k) for k in self.pass_k) or (1, self.num_samples)
        pass_k = tuple(sorted(set(pass_k)))
        bad = [k for k in pass_k if not 1 <= k <= self.num_samples]
        if bad:
            raise ValueError(f"EvalSettings.pass_k {bad} must lie in [1, num_samples={self.num_samples}]: "
                             "pass@k needs at least k samples per problem; raise num_samples or drop them")
        object.__setattr__(self, "pass_k", pass_k)
        if not isinstance(self.reward_config, RewardConfig):
            raise ValueError("EvalSettings.reward_config must be an r1jax.rewards.RewardConfig, got "
                             f"{type(self.reward_config).__name__}")

    @property
    def request(self) -> SamplingRequest:
        """What each of the k samples is drawn with (also stopping at chat end-of-turn tokens)."""
        return SamplingRequest(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                               top_p=self.top_p, top_k=self.top_k, stop_strings=self.stop_strings,
                               stop_at_end_of_turn=True, engine=self.engine)

    @property
    def judge_config(self) -> RewardConfig:
        """The reward config samples are judged with (see the class docstring)."""
        return dataclasses.replace(self.reward_config, weights=JUDGE_WEIGHTS, code_partial_credit=False,
                                   think_prefilled=get_template(self.template).think_prefilled)

    @classmethod
    def for_benchmark(cls, name: str, **overrides: Any) -> "EvalSettings":
        """The defaults of benchmark ``name`` (``r1jax.eval.benchmarks.BENCHMARKS``) with
        ``overrides``; an override of None keeps the default."""
        bench = get_benchmark(name)
        values: dict[str, Any] = dict(num_samples=bench.num_samples, temperature=bench.temperature,
                                      top_p=bench.top_p, max_new_tokens=bench.max_new_tokens,
                                      batch_size=bench.batch_size, pass_k=bench.pass_k, cons=bench.cons)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"EvalSettings has no field(s) {unknown}; fields: {sorted(known)}")
        if overrides.get("num_samples") is not None and overrides.get("pass_k") is None:
            values["pass_k"] = ()  # the benchmark's pass@k list was for its own k
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The settings that decide the samples and their judging, as JSON (for resume checks).
        The engine is not one of them: both engines draw the same tokens."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("reward_config", "engine")}
        out["stop_strings"], out["pass_k"] = list(self.stop_strings), list(self.pass_k)
        judge = self.judge_config
        out["judge"] = {"think_prefilled": judge.think_prefilled, "code_timeout_s": judge.code_timeout_s,
                        "default_language": judge.default_language}
        return out
