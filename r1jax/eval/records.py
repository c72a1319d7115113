"""Per-problem results, the summary metrics computed from them, and their JSONL file.

One line of ``samples.jsonl`` per problem holds every sample (text, extracted answer, correctness,
format, length, truncation) and the problem's counts; the summary is always recomputed from the
records, so a resumed run reports exactly what an uninterrupted one would.

Correctness is ``True``/``False``, or ``None`` when the sample could not be judged (a gold answer
math-verify cannot parse, a sandbox failure, a scoring timeout). Unjudged samples are left out of
the estimators and counted: a problem's pass@k uses its judged samples only, and problems with
fewer than k judged samples are left out of pass@k (counted in ``unjudged_problems`` when none was
judged).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Iterable, Mapping, Sequence

from r1jax.eval.estimators import pass_at_k
from r1jax.eval.settings import EvalSettings


@dataclasses.dataclass(frozen=True)
class SampleRecord:
    """One completion: its text, the answer it commits to (extracted program for code problems),
    whether it is correct (None: not judged), well formed (None: not judged), its length in tokens
    and whether it ran out of budget."""

    text: str
    answer: str | None
    correct: bool | None
    format_ok: bool | None
    length: int
    truncated: bool


@dataclasses.dataclass(frozen=True)
class ProblemRecord:
    """One problem's samples, and its majority answer when voting applies (``vote_answer``; its
    correctness ``vote_correct`` is that of the first sample giving the winning answer)."""

    id: str
    index: int
    kind: str
    question: str
    gold: str
    samples: tuple[SampleRecord, ...]
    vote_answer: str | None = None
    vote_count: int = 0
    vote_correct: bool | None = None

    @property
    def num_judged(self) -> int:
        return sum(s.correct is not None for s in self.samples)

    @property
    def num_correct(self) -> int:
        return sum(s.correct is True for s in self.samples)

    @property
    def pass_at_1(self) -> float | None:
        """Mean correctness of the judged samples; None when none was judged."""
        return self.num_correct / self.num_judged if self.num_judged else None

    def pass_at(self, k: int) -> float | None:
        """Unbiased pass@k over the judged samples; None with fewer than k judged."""
        return pass_at_k(self.num_judged, self.num_correct, k) if self.num_judged >= k else None

    def to_json(self, pass_k: Sequence[int] = (1,)) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["samples"] = [dataclasses.asdict(s) for s in self.samples]
        out["num_judged"], out["num_correct"] = self.num_judged, self.num_correct
        out["pass_at_k"] = {str(k): self.pass_at(k) for k in pass_k}
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "ProblemRecord":
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in raw.items() if k in fields}
        values["samples"] = tuple(SampleRecord(**s) for s in raw["samples"])
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Every problem's record, in problem order, and the summary metrics over them."""

    records: tuple[ProblemRecord, ...]
    metrics: Mapping[str, float]
    settings: EvalSettings

    @property
    def pass_at_1(self) -> float:
        return self.metrics["pass@1"]


def summarize(records: Sequence[ProblemRecord], settings: EvalSettings) -> dict[str, float]:
    """Summary metrics over problems (means of per-problem estimates) and samples.

    ``pass@k`` for each k in ``settings.pass_k``; ``cons@k`` (k = num_samples) over problems that
    were voted on and whose vote could be judged; ``format_rate`` over judged samples;
    ``mean_length``/``max_length`` in tokens and ``truncation_rate`` over all samples; counts of
    problems, samples, unjudged samples and problems with no judged sample. NaN where a mean has
    nothing to average.
    """
    samples = [s for r in records for s in r.samples]
    metrics: dict[str, float] = {"num_problems": float(len(records)), "num_samples": float(len(samples))}
    for k in settings.pass_k:
        values = [v for v in (r.pass_at(k) for r in records) if v is not None]
        metrics[f"pass@{k}"] = _mean(values)
    if settings.cons:
        votes = [r.vote_correct for r in records if r.vote_correct is not None]
        metrics[f"cons@{settings.num_samples}"] = _mean([float(v) for v in votes])
    formats = [float(s.format_ok) for s in samples if s.format_ok is not None]
    metrics["format_rate"] = _mean(formats)
    lengths = [s.length for s in samples]
    metrics["mean_length"] = _mean(lengths)
    metrics["max_length"] = float(max(lengths)) if lengths else math.nan
    metrics["truncation_rate"] = _mean([float(s.truncated) for s in samples])
    metrics["unjudged_samples"] = float(sum(s.correct is None for s in samples))
    metrics["unjudged_problems"] = float(sum(r.num_judged == 0 for r in records))
    return metrics


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def running_accuracy(records: Iterable[ProblemRecord]) -> float:
    """Mean pass@1 over the records so far (for the progress bar); NaN before any judged one."""
    return _mean([v for v in (r.pass_at_1 for r in records) if v is not None])


# --- the JSONL file -------------------------------------------------------------------------------

def read_records(path: str, *, repair: bool = False) -> list[ProblemRecord]:
    """Every complete record in ``path`` (none if it does not exist).

    A last line without its newline is what a kill during a write leaves: it is ignored, and with
    ``repair`` cut from the file so that appends start on a fresh line. Any other bad line is an
    error naming the line.
    """
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    complete_end = data.rfind(b"\n") + 1
    if repair and complete_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(complete_end)
            f.flush()
            os.fsync(f.fileno())
    records = []
    for line_no, line in enumerate(data[:complete_end].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(ProblemRecord.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{line_no}: not a problem record ({type(e).__name__}: {e}); "
                             "this file is not an r1jax evaluation's output") from None
    return records


def append_records(path: str, records: Sequence[ProblemRecord], pass_k: Sequence[int]) -> None:
    """Appends one line per record and makes it durable (flush + fsync) before returning."""
    if not records:
        return
    payload = "".join(json.dumps(r.to_json(pass_k), ensure_ascii=False) + "\n" for r in records)
    with open(path, "a", encoding="utf-8") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: str, value: Any) -> None:
    """Writes JSON to ``path`` through a temporary file and a rename (never half-written)."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False, allow_nan=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
